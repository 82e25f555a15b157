"""Each source turns its real payload into Alerts; the maps are explicit."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from integrations.alerts import SOURCES, ItemError, PayloadError, get_source
from integrations.alerts.model import SEVERITY_MAP, STATUS_MAP, normalise_severity, normalise_status
from tests.alerts.conftest import fixture_json


def test_registry_has_the_three_sources():
    assert set(SOURCES) >= {"alertmanager", "grafana", "generic"}
    with pytest.raises(KeyError, match="known: alertmanager"):
        get_source("nagios")


def test_alertmanager_group_with_firing_and_resolved():
    alerts = get_source("alertmanager").parse(fixture_json("alertmanager_mixed.json"))
    assert [a.status for a in alerts] == ["firing", "firing", "resolved"]
    first, second, third = alerts
    assert first.group_key == '{}/{env="prod"}:{alertname="HISDown"}' == third.group_key
    assert first.fingerprint == "5f1c6b5e3a2d4c10"
    assert first.severity == "critical" and third.severity == "warning"
    assert first.labels["service"] == "his-core" and first.annotations["summary"].startswith("HIS core")
    # nanoseconds from Go are cut to microseconds; the zone is kept
    assert first.starts_at == datetime(2024, 5, 1, 0, 0, 12, 345678, tzinfo=timezone.utc)
    assert first.ends_at is None  # Go's zero time means "still firing"
    assert third.ends_at == datetime(2024, 5, 1, 7, 58, 30, tzinfo=timezone.utc)
    assert first.source == "alertmanager" and first.source_url.startswith("http://prometheus")
    assert first.extra == {"receiver": "runbooks", "externalURL": "http://alertmanager.hosp.local:9093"}
    assert first.group == 'alertmanager:{}/{env="prod"}:{alertname="HISDown"}'


def test_alertmanager_without_fingerprint_gets_a_stable_one():
    body = {"version": "4", "groupKey": "g", "alerts": [{"status": "firing", "labels": {"alertname": "X", "a": "1"}},
                                                        {"status": "firing", "labels": {"a": "1", "alertname": "X"}}]}
    a, b = get_source("alertmanager").parse(body)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16


def test_grafana_keeps_its_extras():
    firing, resolved = get_source("grafana").parse(fixture_json("grafana_firing.json"))
    assert firing.status == "firing" and resolved.status == "resolved"
    assert firing.severity == "high" and resolved.severity == "warning"
    assert firing.extra["values"] == {"A": 0, "B": 0, "C": 1}
    assert firing.extra["dashboardURL"].endswith("his-overview?orgId=1")
    assert firing.extra["panelURL"].endswith("viewPanel=4")
    assert firing.extra["silenceURL"].startswith("https://grafana.hosp.local/alerting/silence")
    assert firing.extra["orgId"] == 1 and firing.extra["state"] == "alerting"
    assert "imageURL" not in firing.extra  # empty strings are dropped
    assert "dashboardURL" not in resolved.extra
    assert firing.group_key.startswith("org1/{}/")
    assert firing.starts_at == datetime(2024, 5, 2, 8, 15, tzinfo=timezone.utc)
    assert resolved.ends_at == datetime(2024, 5, 2, 8, 5, tzinfo=timezone.utc)


def test_generic_batch_maps_words():
    ups, chiller = get_source("generic").parse(fixture_json("generic_batch.json"))
    assert ups.status == "firing" and ups.severity == "critical"  # problem, disaster
    assert ups.labels["alertname"] == "UPS on battery" and ups.group_key == "power-east-2024-05-03"
    assert ups.fingerprint == "ups-2-battery" and ups.source_url == "https://bms.hosp.local/ups/2"
    assert chiller.status == "resolved" and chiller.severity is None  # ok
    assert chiller.group == f"generic:fp:{chiller.fingerprint}"


def test_generic_single_object_and_default_start():
    (alert,) = get_source("generic").parse({"status": "firing", "title": "Fire alarm B2", "severity": "crit"})
    assert alert.labels == {"alertname": "Fire alarm B2"} and alert.severity == "critical"
    assert alert.starts_at is not None and alert.starts_at.tzinfo is not None


@pytest.mark.parametrize("word,expected", sorted(STATUS_MAP.items()))
def test_status_map(word, expected):
    assert normalise_status(word) == expected == normalise_status(word.upper())


@pytest.mark.parametrize("word,expected", sorted(SEVERITY_MAP.items()))
def test_severity_map(word, expected):
    assert normalise_severity(word) == expected == normalise_severity(f" {word.upper()} ")


def test_unknown_words():
    assert normalise_severity("purple") is None and normalise_severity(3) is None
    with pytest.raises(ValueError, match="send 'firing' or 'resolved'"):
        normalise_status("pending")


def test_one_bad_alert_does_not_hide_the_others():
    body = fixture_json("alertmanager_mixed.json")
    body["alerts"].insert(1, {"status": "firing", "labels": {"alertname": ["not", "text"]}})
    body["alerts"].append({"status": "firing", "labels": {"a": "b"}, "startsAt": "yesterday"})
    items = get_source("alertmanager").parse_each(body)
    assert [type(i).__name__ for i in items] == ["Alert", "ItemError", "Alert", "Alert", "ItemError"]
    assert "alertname" in items[1].error and "must be text" in items[1].error
    assert "RFC 3339" in items[4].error
    with pytest.raises(PayloadError, match="alert #1"):
        get_source("alertmanager").parse(body)


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic"])
@pytest.mark.parametrize("body,message", [
    ([], "must be a JSON object"),
    ("firing", "must be a JSON object"),
    ({"alerts": {}}, "must be a list"),
    ({"alerts": []}, "is empty"),
])
def test_envelope_errors(source, body, message):
    with pytest.raises(PayloadError, match=message):
        get_source(source).parse_each(body)


def test_item_errors_are_specific():
    cases = [
        ({"status": "firing"}, "'labels' is missing"),
        ({"labels": {"a": "b"}}, "'status' is missing"),
        ({"status": "firing", "labels": {"a": "b"}, "startsAt": "2024-05-01T08:00:00"}, "no time zone"),
        ({"status": "firing", "labels": {"a": "b"}, "generatorURL": 5}, "generatorURL must be text"),
    ]
    for raw, message in cases:
        (item,) = get_source("alertmanager").parse_each({"alerts": [raw]})
        assert isinstance(item, ItemError) and message in item.error, (raw, item)
    (item,) = get_source("generic").parse_each({"status": "firing", "title": "x", "colour": "red"})
    assert "unknown field(s) colour" in item.error
    (item,) = get_source("generic").parse_each({"status": "firing"})
    assert "needs 'labels' or a 'title'" in item.error
    (item,) = get_source("grafana").parse_each({"alerts": [{"status": "firing", "labels": {}, "values": [1]}]})
    assert "'values' must be an object" in item.error
