"""Each source turns its real payload into Alerts; the maps are explicit."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from integrations.alerts import SOURCES, ItemError, ItemIgnored, PayloadError, get_source
from integrations.alerts.model import SEVERITY_MAP, STATUS_MAP, normalise_severity, normalise_status
from tests.alerts.conftest import fixture_json


def test_registry_has_the_sources():
    assert set(SOURCES) >= {"alertmanager", "grafana", "generic", "pagerduty"}
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


# ---------------------------------------------------------------- Alertmanager version 3, Grafana legacy, PagerDuty


def test_alertmanager_version_3_and_the_notifications_status():
    """Releases before 0.16 send version 3 (same shape); an alert without status takes the notification's."""
    body = fixture_json("alertmanager_mixed.json")
    body["version"] = "3"
    for alert in body["alerts"]:
        del alert["status"]
    body["status"] = "resolved"
    alerts = get_source("alertmanager").parse(body)
    assert [a.status for a in alerts] == ["resolved"] * 3
    with pytest.raises(PayloadError, match="version '2' is not supported"):
        get_source("alertmanager").parse({**body, "version": "2"})


def test_grafana_legacy_alert():
    (alert,) = get_source("grafana").parse(fixture_json("grafana_legacy.json"))
    assert alert.status == "firing" and alert.labels == {"alertname": "Panel Title alert", "tag name": "tag value"}
    assert alert.annotations["summary"] == "Notification Message" and alert.annotations["title"] == "[Alerting] Panel Title alert"
    assert alert.group_key == "org1/legacy-rule/1" and alert.source_url.startswith("http://localhost:3000/d/")
    assert alert.extra["evalMatches"] == [{"value": 1, "metric": "Count", "tags": {}}]
    assert alert.extra["panelId"] == 2 and alert.extra["dashboardId"] == 1 and alert.extra["ruleId"] == 1
    ok = get_source("grafana").parse({**fixture_json("grafana_legacy.json"), "state": "ok", "evalMatches": []})
    assert ok[0].status == "resolved" and ok[0].fingerprint == alert.fingerprint
    no_data = get_source("grafana").parse({**fixture_json("grafana_legacy.json"), "state": "no_data"})
    assert no_data[0].status == "firing" and no_data[0].labels["grafana_state"] == "no_data"


@pytest.mark.parametrize("state", ["pending", "paused"])
def test_grafana_legacy_states_that_mean_nothing_to_do(state):
    (item,) = get_source("grafana").parse_each({**fixture_json("grafana_legacy.json"), "state": state})
    assert isinstance(item, ItemIgnored) and state in item.error
    (bad,) = get_source("grafana").parse_each({**fixture_json("grafana_legacy.json"), "state": "burning"})
    assert type(bad) is ItemError and "alerting, no_data, ok" in bad.error


def test_pagerduty_example_from_its_documentation():
    (alert,) = get_source("pagerduty").parse(fixture_json("pagerduty_trigger.json"))
    assert alert.status == "firing" and alert.severity == "info"
    assert alert.labels["alertname"] == alert.labels["summary"] == "Example alert on host1.example.com"
    assert alert.labels["component"] == "postgres" and alert.labels["class"] == "deploy"
    assert alert.labels["ping time"] == "1500ms" and alert.labels["load avg"] == "0.75"  # custom_details route like labels
    assert alert.group_key == "samplekeyhere" and alert.group == "pagerduty:samplekeyhere"
    assert alert.starts_at == datetime(2015, 7, 17, 8, 42, 58, 315000, tzinfo=timezone.utc)
    assert alert.source_url == "https://monitoring.service.com"
    assert alert.extra["links"][0]["text"] == "Link text" and alert.extra["client"] == "Sample Monitoring Service"
    assert "routing_key" not in alert.model_dump_json()  # the sender's secret is not kept


@pytest.mark.parametrize("word,grade", [("critical", "critical"), ("error", "high"), ("warning", "warning"), ("info", "info")])
def test_pagerduty_severities(word, grade):
    body = fixture_json("pagerduty_zabbix.json")
    body["payload"]["severity"] = word
    assert get_source("pagerduty").parse(body)[0].severity == grade


def test_pagerduty_trigger_without_dedup_key_gets_one():
    body = fixture_json("pagerduty_trigger.json")
    del body["dedup_key"]
    a, b = get_source("pagerduty").parse(body)[0], get_source("pagerduty").parse(body)[0]
    assert len(a.group_key) == 32 and a.group_key != b.group_key


def test_pagerduty_acknowledge_and_resolve():
    (resolved,) = get_source("pagerduty").parse({"routing_key": "k", "event_action": "resolve", "dedup_key": "4081274"})
    assert resolved.status == "resolved" and resolved.group_key == "4081274" and resolved.labels == {}
    (ack,) = get_source("pagerduty").parse({"routing_key": "k", "event_action": "acknowledge", "dedup_key": "4081274"})
    assert ack.status == "firing" and ack.extra["event_action"] == "acknowledge"
    trigger = get_source("pagerduty").parse(fixture_json("pagerduty_zabbix.json"))[0]
    assert trigger.fingerprint == resolved.fingerprint == ack.fingerprint


@pytest.mark.parametrize("change,message", [
    ({"event_action": "explode"}, "event_action 'explode'"),
    ({"event_action": "resolve", "dedup_key": None}, "'dedup_key' is missing"),
    ({"payload": None}, "'payload' must be an object"),
    ({"payload": {"summary": "x", "source": "y", "severity": "fatal"}}, "payload.severity 'fatal'"),
    ({"payload": {"summary": "x", "severity": "info"}}, "'payload.source' is missing"),
    ({"payload": {"summary": "x", "source": "y", "severity": "info", "timestamp": "yesterday"}}, "payload.timestamp"),
    ({"routing_key": 5}, "'routing_key' must be text"),
])
def test_pagerduty_refusals(change, message):
    (item,) = get_source("pagerduty").parse_each({**fixture_json("pagerduty_trigger.json"), **change})
    assert isinstance(item, ItemError) and message in item.error, item
