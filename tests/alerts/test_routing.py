"""routes.yaml: matchers, parameters, grades, first match wins, fallback, unrouted reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.alerts import get_source
from integrations.alerts.model import Alert
from integrations.alerts.routing import Matcher, RoutesError, Routes, check_routes, load_routes, route
from tests.alerts.conftest import FIXTURES, ROUTES, fixture_json

ROOT = Path(__file__).resolve().parents[2]


def alert(labels=None, annotations=None, severity=None, status="firing") -> Alert:
    return Alert(status=status, labels=labels or {}, annotations=annotations or {}, fingerprint="f", source="generic",
                 severity=severity)


def routes_from(tmp_path, text: str) -> Routes:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return load_routes(path)


@pytest.mark.parametrize("text,labels,holds", [
    ("env=prod", {"env": "prod"}, True),
    ("env=prod", {"env": "production"}, False),
    ("env!=prod", {"env": "dev"}, True),
    ("env!=prod", {}, True),
    ("env=", {}, True),                      # a missing label is ''
    ('env=~"prod|dr"', {"env": "dr"}, True),
    ("env=~prod", {"env": "prod-2"}, False),  # regexes match the whole value
    ("env!~prod.*", {"env": "prod-2"}, False),
    ("env!~prod.*", {"env": "test"}, True),
    ("alertname = HISDown", {"alertname": "HISDown"}, True),
])
def test_matchers(text, labels, holds):
    assert Matcher.model_validate(text).holds(labels) is holds


def test_matcher_as_mapping():
    assert Matcher.model_validate({"label": "a", "op": "=~", "value": "x+"}).holds({"a": "xxx"})


@pytest.mark.parametrize("bad,message", [
    ("routes: [{runbook: x, match: ['env']}]", "is not 'label=value'"),
    ("routes: [{runbook: x, match: ['env=~(']}]", "does not compile"),
    ("routes: [{runbook: Bad_Id}]", "runbook"),
    ("routes: [{runbook: x, parameters: {site: site}}]", "is not 'labels.<name>'"),
    ("routes: [{runbook: x, parameters: {site: {label: a, value: b}}}]", "exactly one"),
    ("routes: [{runbook: x, severity: {urgent: '1'}}]", "not one of critical"),
    ("routes: [{runbook: x, colour: red}]", "colour"),
    ("routes: [unclosed", "not valid YAML"),
])
def test_bad_routes_file_says_what_is_wrong(tmp_path, bad, message):
    with pytest.raises(RoutesError, match=message):
        routes_from(tmp_path, bad)


def test_first_match_wins_and_fills_parameters(tmp_path):
    routes = routes_from(tmp_path, ROUTES.replace("fallback: {key: runbook}", "") + """
  - name: catch-all
    runbook: generic-incident
""")
    a = get_source("alertmanager").parse(fixture_json("alertmanager_mixed.json"))[0]
    d = route(a, routes)
    assert (d.runbook, d.route, d.severity) == ("hospital-his-outage", "his", "1")
    assert d.parameters == {"system": "his-core", "site": "east-campus", "summary": "HIS core unreachable from 3 probes",
                            "reporter": "monitoring"}
    staging = alert({"alertname": "HISDown", "env": "staging"})
    assert route(staging, routes).runbook == "generic-incident"


def test_defaults_and_absent_values(tmp_path):
    routes = routes_from(tmp_path, ROUTES)
    d = route(alert({"alertname": "HISDown"}, severity="info"), routes)
    assert d.parameters == {"site": "main", "reporter": "monitoring"}  # absent label/annotation without default: left out
    assert d.severity is None  # info is not mapped: the runbook grades itself


def test_fallback_names_the_runbook_and_labels_fill_same_named_parameters(tmp_path):
    routes = routes_from(tmp_path, ROUTES)
    a = alert({"alertname": "UPS", "runbook": "power-failure", "site": "east", "load_kw": "12.5", "generator": "yes",
               "unrelated": "x"}, {"room": "B1"})
    d = route(a, routes, FIXTURES / "runbooks")
    assert d.runbook == "power-failure" and d.route == "runbook label"
    assert d.parameters == {"site": "east", "room": "B1", "load_kw": 12.5, "generator": True}


def test_fallback_by_annotation(tmp_path):
    d = route(alert({"alertname": "UPS"}, {"runbook": "power-failure"}), routes_from(tmp_path, ROUTES), FIXTURES / "runbooks")
    assert d.runbook == "power-failure"


def test_fallback_to_unknown_runbook_is_unrouted_with_reason(tmp_path):
    d = route(alert({"alertname": "X", "runbook": "no-such-plan"}), routes_from(tmp_path, ROUTES), FIXTURES / "runbooks")
    assert not d.routed and "no-such-plan" in d.reason and "does not exist" in d.reason


def test_fallback_can_be_disabled(tmp_path):
    routes = routes_from(tmp_path, "fallback: {enabled: false}")
    assert not route(alert({"runbook": "power-failure"}), routes, FIXTURES / "runbooks").routed


def test_no_match_says_why(tmp_path):
    d = route(alert({"alertname": "DiskFull"}), routes_from(tmp_path, ROUTES))
    assert not d.routed
    assert "no route matches" in d.reason and "his" in d.reason and "add a route" in d.reason


def test_missing_routes_file_is_empty(tmp_path):
    assert load_routes(tmp_path / "none.yaml").routes == []


def test_shipped_routes_fit_the_shipped_runbooks():
    routes = load_routes(ROOT / "config" / "routes.yaml")
    assert routes.routes and routes.fallback.enabled
    assert check_routes(routes, ROOT / "runbooks") == []
    a = get_source("alertmanager").parse(fixture_json("alertmanager_mixed.json"))[0]
    d = route(a, routes, ROOT / "runbooks")
    assert d.runbook == "hospital-his-outage" and d.severity == "1"
    assert d.parameters["fault_time"] == "2024-05-01T08:00:12.345678+08:00"


def test_check_routes_finds_what_would_fail_later(tmp_path):
    routes = routes_from(tmp_path, """
routes:
  - runbook: power-failure
    parameters: {room: labels.room, colour: labels.colour}
    severity: {critical: "9"}
  - runbook: no-such-plan
""")
    problems = check_routes(routes, FIXTURES / "runbooks")
    assert any("'colour' is not a parameter of power-failure" in p for p in problems)
    assert any("requires parameter 'site'" in p for p in problems)
    assert any("'9' is not a level of power-failure" in p for p in problems)
    assert any("'no-such-plan' does not exist" in p for p in problems)


def test_alert_fields_as_parameters(tmp_path):
    routes = routes_from(tmp_path, "routes: [{runbook: x, parameters: {since: alert.starts_at, id: alert.fingerprint}}]")
    a = get_source("generic").parse({"status": "firing", "title": "t", "starts_at": "2024-05-01T08:00:00Z", "fingerprint": "fp"})[0]
    assert route(a, routes).parameters == {"since": "2024-05-01T08:00:00Z", "id": "fp"}
    with pytest.raises(RoutesError):
        routes_from(tmp_path, "routes: [{runbook: x, parameters: {since: alert.colour}}]")


def test_fallback_gives_an_unfilled_time_the_alert_start(tmp_path):
    a = get_source("generic").parse({"status": "firing", "title": "HIS down", "labels": {"runbook": "pump-station-power-loss"},
                                     "starts_at": "2024-05-01T08:00:00Z"})[0]
    d = route(a, routes_from(tmp_path, ""), ROOT / "runbooks")
    assert d.runbook == "pump-station-power-loss" and d.parameters == {"outage_started": "2024-05-01T08:00:00+00:00"}


def test_shipped_default_route_pages_the_duty_officer():
    """An alert nothing takes goes to runbooks/unrouted-alert.yaml, and still says why it was not routed."""
    routes = load_routes(ROOT / "config" / "routes.yaml")
    assert routes.unrouted and routes.unrouted.runbook == "unrouted-alert"
    a = get_source("generic").parse({"status": "firing", "title": "Chiller 3 temperature", "labels": {"site": "east"},
                                     "annotations": {"summary": "chiller at 31 C"}, "starts_at": "2024-05-01T08:00:00Z"})[0]
    d = route(a, routes, ROOT / "runbooks")
    assert d.routed and d.unrouted and d.runbook == "unrouted-alert" and "no route matches" in d.reason
    assert d.parameters == {"alert_name": "Chiller 3 temperature", "summary": "chiller at 31 C", "alert_source": "generic",
                            "fired_at": "2024-05-01T08:00:00Z"}
    named_missing = get_source("generic").parse({"status": "firing", "title": "x", "labels": {"runbook": "no-such-plan"}})[0]
    d = route(named_missing, routes, ROOT / "runbooks")
    assert d.runbook == "unrouted-alert" and "no-such-plan" in d.reason


def test_default_route_is_checked(tmp_path):
    routes = routes_from(tmp_path, "unrouted: {runbook: power-failure, parameters: {colour: labels.colour}}")
    problems = check_routes(routes, FIXTURES / "runbooks")
    assert any(p.startswith("unrouted (unrouted)") and "'colour' is not a parameter" in p for p in problems)
    assert any("requires parameter 'site'" in p for p in problems)
