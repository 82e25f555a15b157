"""The receiver's HTTP surface: answers, auth, Grafana signatures, size limit, health, unrouted log."""

from __future__ import annotations

import base64
import json
import time

import pytest

from integrations.alerts.auth import grafana_signature
from tests.alerts.conftest import FakePrefect, drained, fixture_json, wait_until

TOKEN = "s3cret-token"
SECRET = "grafana-hmac-secret"


def test_answer_lists_accepted_unrouted_and_rejected(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    body["alerts"].append({"status": "firing", "labels": {"alertname": "DiskFull", "env": "prod"}})
    body["alerts"].append({"status": "firing", "labels": "oops"})
    r = client.post("/alerts/alertmanager", json=body)
    assert r.status_code == 202
    answer = r.json()
    assert [a["index"] for a in answer["accepted"]] == [0, 1, 2]
    assert all(a["runbook"] == "hospital-his-outage" and a["spool_id"] for a in answer["accepted"])
    assert answer["unrouted"][0]["index"] == 3 and "no route matches" in answer["unrouted"][0]["reason"]
    assert answer["rejected"][0]["index"] == 4 and "labels" in answer["rejected"][0]["error"]
    drained(client)
    assert len(prefect_fake.runs) == 1
    (line,) = client.app.state.store.unrouted()
    assert line["alert"]["labels"]["alertname"] == "DiskFull" and "add a route" in line["reason"]


def test_generic_and_grafana_endpoints(make_client, prefect_fake):
    client = make_client()
    r = client.post("/alerts/generic", json=fixture_json("generic_batch.json"))
    assert r.status_code == 202
    # UPS names its runbook (fallback); the chiller has no route
    assert [a["runbook"] for a in r.json()["accepted"]] == ["power-failure"]
    assert len(r.json()["unrouted"]) == 1
    r = client.post("/alerts/grafana", json=fixture_json("grafana_firing.json"))
    assert r.status_code == 202 and len(r.json()["accepted"]) == 2
    drained(client)
    power, his = prefect_fake.runs
    assert power["runbook"] == "power-failure" and power["parameters"] == {"site": "east-campus", "room": "B1-datacenter"}
    assert his["runbook"] == "hospital-his-outage" and his["severity"] == "2"
    assert his["alert"]["extra"]["values"] == {"A": 0, "B": 0, "C": 1}


def test_healthz_and_notify_router(make_client):
    client = make_client()
    health = wait_until(lambda: (h := client.get("/healthz").json())["prefect_checked_at"] and h, 10, "the first Prefect check")
    assert health["status"] == "ok" and health["spool_pending"] == 0 and health["prefect_reachable"] is True
    from app import inbound

    paths = set(client.app.openapi()["paths"])
    assert {route.path for route in inbound.router.routes if route.include_in_schema} <= paths


def test_healthz_claims_prefect_only_after_checking(make_client, make_settings):
    """Before any check (no drainer) Prefect is not reported reachable; a failing check says so too."""
    unchecked = make_client(make_settings(state="a"), drain=False).get("/healthz").json()
    assert unchecked["prefect_reachable"] is False and unchecked["prefect_checked_at"] is None
    down = FakePrefect()
    down.down = True
    client = make_client(make_settings(state="b"), fake=down)
    health = wait_until(lambda: (h := client.get("/healthz").json())["prefect_checked_at"] and h, 10, "the first Prefect check")
    assert health["prefect_reachable"] is False


# ---------------------------------------------------------------- token


@pytest.fixture
def token_client(make_client, make_settings):
    return make_client(make_settings(intake_token=TOKEN))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("header,status", [
    (None, 401),
    (f"Bearer {TOKEN}x", 401),
    ("Bearer ", 401),
    (f"Token {TOKEN}", 401),
    (basic("alertmanager", "nope"), 401),
    ("Basic %%%", 401),
    (f"Bearer {TOKEN}", 202),
    (f"bearer  {TOKEN} ", 202),
    (basic("anyone", TOKEN), 202),
])
def test_token(token_client, header, status):
    headers = {"Authorization": header} if header else {}
    r = token_client.post("/alerts/generic", json={"status": "firing", "title": "x"}, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert "error" in r.json() and r.headers["www-authenticate"].startswith("Bearer")


# ---------------------------------------------------------------- Grafana HMAC


@pytest.fixture
def signed_client(make_client, make_settings):
    return make_client(make_settings(grafana_secret=SECRET))


def grafana_body() -> bytes:
    return json.dumps(fixture_json("grafana_firing.json")).encode()


def test_grafana_signature_over_body(signed_client):
    body = grafana_body()
    r = signed_client.post("/alerts/grafana", content=body,
                           headers={"X-Grafana-Alerting-Signature": grafana_signature(SECRET, body)})
    assert r.status_code == 202, r.text


def test_grafana_signature_with_timestamp(signed_client):
    body, ts = grafana_body(), str(int(time.time()))
    r = signed_client.post("/alerts/grafana", content=body, headers={
        "X-Grafana-Alerting-Signature": grafana_signature(SECRET, body, ts), "X-Grafana-Alerting-Timestamp": ts})
    assert r.status_code == 202, r.text


def test_grafana_default_header_of_older_versions(signed_client):
    body = grafana_body()
    r = signed_client.post("/alerts/grafana", content=body,
                           headers={"X-Grafana-Alert-Signature": grafana_signature(SECRET, body)})
    assert r.status_code == 202, r.text


def test_known_vector():
    """Same HMAC as `printf %s body | openssl dgst -sha256 -hmac secret` and Grafana's signer."""
    assert grafana_signature("secret", b"test message") == "3bcebf43c85d20bba6e3b6ba278af1d2ba3ab0d57de271b0ad30b833e851c5a6"
    assert grafana_signature("secret", b"test message", "1700000000") == \
        __import__("hmac").new(b"secret", b"1700000000:test message", "sha256").hexdigest()


@pytest.mark.parametrize("make_headers,message", [
    (lambda body: {}, "signature missing"),
    (lambda body: {"X-Grafana-Alerting-Signature": grafana_signature("wrong", body)}, "does not match"),
    (lambda body: {"X-Grafana-Alerting-Signature": grafana_signature(SECRET, body + b" ")}, "does not match"),
    (lambda body: {"X-Grafana-Alerting-Signature": grafana_signature(SECRET, body, "1700000000"),
                   "X-Grafana-Alerting-Timestamp": "1700000000"}, "replays"),
    (lambda body: {"X-Grafana-Alerting-Signature": grafana_signature(SECRET, body),
                   "X-Grafana-Alerting-Timestamp": str(int(time.time()))}, "does not match"),  # signed without, sent with
    (lambda body: {"X-Grafana-Alerting-Signature": "zz", "X-Grafana-Alerting-Timestamp": "soon"}, "Unix seconds"),
])
def test_grafana_bad_signatures(signed_client, make_headers, message):
    body = grafana_body()
    r = signed_client.post("/alerts/grafana", content=body, headers=make_headers(body))
    assert r.status_code == 401 and message in r.json()["error"]


def test_signature_is_only_asked_of_grafana(signed_client):
    assert signed_client.post("/alerts/generic", json={"status": "firing", "title": "x"}).status_code == 202


# ---------------------------------------------------------------- size


def test_size_limit(make_client, make_settings):
    client = make_client(make_settings(), max_body_bytes=2000)
    big = {"status": "firing", "title": "x", "annotations": {"description": "y" * 3000}}
    r = client.post("/alerts/generic", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the stream is cut off as it arrives
        for _ in range(10):
            yield b" " * 500

    r = client.post("/alerts/generic", content=chunks())
    assert r.status_code == 413
    assert client.post("/alerts/generic", json={"status": "firing", "title": "x"}).status_code == 202


# ---------------------------------------------------------------- more sources (issue 14)

PD_ROUTES = """
routes:
  - name: datapipe
    match: [component=postgres, group=prod-datapipe]
    runbook: power-failure
    parameters: {site: labels.source, room: {label: "ping time"}}
    severity: {info: "3"}
fallback: {key: runbook}
"""


def test_pagerduty_example_is_answered_as_pagerduty_does(make_client, make_settings, prefect_fake):
    client = make_client(make_settings(PD_ROUTES))
    for path in ("/alerts/pagerduty", "/v2/enqueue"):
        r = client.post(path, json=fixture_json("pagerduty_trigger.json"))
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["status"] == "success" and answer["message"] == "Event processed"
        assert answer["dedup_key"] == "samplekeyhere" and answer["accepted"][0]["runbook"] == "power-failure"
    drained(client)
    (run,) = prefect_fake.runs  # one dedup_key, one incident
    assert run["parameters"] == {"site": "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003",
                                 "room": "1500ms"}
    assert run["severity"] == "3"

    # acknowledge joins it and starts nothing; resolve reaches it by dedup_key alone
    ack = client.post("/v2/enqueue", json={"routing_key": "k", "event_action": "acknowledge", "dedup_key": "samplekeyhere"})
    res = client.post("/v2/enqueue", json={"routing_key": "k", "event_action": "resolve", "dedup_key": "samplekeyhere"})
    assert ack.status_code == res.status_code == 202 and res.json()["dedup_key"] == "samplekeyhere"
    drained(client)
    assert len(prefect_fake.runs) == 1
    assert [(run_id, alert["status"]) for run_id, alert in prefect_fake.resolutions] == [(run["id"], "resolved")]
    outcomes = [e["outcome"] for e in prefect_fake.events]
    assert outcomes == ["started", "joined", "acknowledged", "resolution-delivered"]


def test_pagerduty_generates_and_answers_a_dedup_key(make_client):
    client = make_client()
    body = fixture_json("pagerduty_trigger.json")
    del body["dedup_key"]
    answer = client.post("/alerts/pagerduty", json=body).json()
    assert len(answer["dedup_key"]) == 32 and answer["status"] == "success"


@pytest.mark.parametrize("body,error", [
    (b"{", "not JSON"),
    (json.dumps({"routing_key": "k", "event_action": "resolve"}).encode(), "'dedup_key' is missing"),
    (json.dumps({"routing_key": "k", "payload": {}}).encode(), "'event_action' is missing"),
    (json.dumps({"routing_key": "k", "event_action": "trigger", "payload": {"summary": "s", "source": "x",
                                                                              "severity": "bad"}}).encode(), "payload.severity"),
])
def test_pagerduty_style_400(make_client, body, error):
    r = make_client().post("/alerts/pagerduty", content=body)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["status"] == "invalid event" and answer["message"] == "Event object is invalid"
    assert any(error in e for e in answer["errors"]), answer


def test_pagerduty_routing_key_is_the_token(make_client, make_settings):
    client = make_client(make_settings(intake_token=TOKEN))
    body = fixture_json("pagerduty_zabbix.json")
    assert client.post("/v2/enqueue", json=body).status_code == 401                     # its own key, not ours
    assert client.post("/v2/enqueue", json={**body, "routing_key": TOKEN}).status_code == 202
    assert client.post("/v2/enqueue", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
    r = client.post("/v2/enqueue", json={**body, "routing_key": TOKEN}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["status"] == "unauthorized"                 # a header given is checked
    assert client.post("/v2/enqueue", content=b"{").status_code == 401
    assert client.post("/alerts/generic", json={"status": "firing", "title": "x", "routing_key": TOKEN}).status_code == 401


def test_alertmanager_version_3_is_accepted(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    body["version"] = "3"
    del body["alerts"][0]["status"]  # takes the notification's: firing
    r = client.post("/alerts/alertmanager", json=body)
    assert r.status_code == 202 and [a["status"] for a in r.json()["accepted"]] == ["firing", "firing", "resolved"]
    drained(client)
    assert len(prefect_fake.runs) == 1


def test_grafana_legacy_is_accepted(make_client, make_settings, prefect_fake):
    client = make_client(make_settings(ROUTES_LEGACY))
    r = client.post("/alerts/grafana", json=fixture_json("grafana_legacy.json"))
    assert r.status_code == 202 and r.json()["accepted"][0]["runbook"] == "power-failure", r.text
    pending = client.post("/alerts/grafana", json={**fixture_json("grafana_legacy.json"), "state": "pending"})
    assert pending.status_code == 202 and "pending" in pending.json()["ignored"][0]["reason"]
    drained(client)
    (run,) = prefect_fake.runs
    assert run["parameters"] == {"site": "tag value"} and run["alert"]["extra"]["panelId"] == 2


ROUTES_LEGACY = """
routes:
  - match: [alertname="Panel Title alert"]
    runbook: power-failure
    parameters: {site: {label: "tag name"}}
"""

DEFAULT_ROUTE = """
routes:
  - match: [alertname=HISDown]
    runbook: hospital-his-outage
unrouted:
  runbook: power-failure
  parameters:
    site: {value: unknown}
    room: labels.alertname
"""


def test_an_unrouted_alert_starts_the_default_routes_runbook(make_client, make_settings, prefect_fake):
    client = make_client(make_settings(DEFAULT_ROUTE))
    r = client.post("/alerts/generic", json={"status": "firing", "title": "Chiller 3 temperature", "labels": {"site": "east"}})
    assert r.status_code == 202
    (unrouted,) = r.json()["unrouted"]
    assert unrouted["runbook"] == "power-failure" and unrouted["spool_id"] and "no route matches" in unrouted["reason"]
    drained(client)
    (run,) = prefect_fake.runs
    assert run["runbook"] == "power-failure" and run["parameters"] == {"site": "unknown", "room": "Chiller 3 temperature"}
    (line,) = client.app.state.store.unrouted()  # still recorded for whoever writes routes
    assert line["alert"]["labels"]["alertname"] == "Chiller 3 temperature"


def test_the_store_failing_is_a_503_and_nothing_is_answered_accepted(make_client, monkeypatch):
    import sqlite3

    from integrations.alerts.store import Store

    client = make_client()

    def locked(self, items):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Store, "append", locked)
    r = client.post("/alerts/alertmanager", json=fixture_json("alertmanager_mixed.json"))
    assert r.status_code == 503 and "retry" in r.json()["error"] and r.headers["retry-after"] == "30"
