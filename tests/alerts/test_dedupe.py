"""Exactly one incident per alert group and episode."""

from __future__ import annotations

import copy
import threading

from app.intake import Drainer, Intake, idempotency_key
from integrations.alerts.store import Store
from tests.alerts.conftest import drained, fixture_json


def post(client, source: str, body) -> dict:
    r = client.post(f"/alerts/{source}", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def test_one_notification_with_two_firing_alerts_starts_one_incident(make_client, prefect_fake):
    client = make_client()
    answer = post(client, "alertmanager", fixture_json("alertmanager_mixed.json"))
    assert [a["status"] for a in answer["accepted"]] == ["firing", "firing", "resolved"]
    drained(client)
    assert len(prefect_fake.runs) == 1
    run = prefect_fake.runs[0]
    assert run["runbook"] == "hospital-his-outage" and run["severity"] == "1" and run["drill"] is False
    assert run["parameters"] == {"system": "his-core", "site": "east-campus", "reporter": "monitoring",
                                 "summary": "HIS core unreachable from 3 probes"}
    assert run["alert"]["fingerprint"] == "5f1c6b5e3a2d4c10" and run["alert"]["source"] == "alertmanager"
    assert run["incident"].startswith("HISDown #")
    outcomes = [e["outcome"] for e in prefect_fake.events]
    # the flapped load balancer resolved before the incident saw it fire: not the incident's news
    assert outcomes == ["started", "joined", "resolved-outside-incident"]
    assert all(e["flow_run_id"] == run["id"] for e in prefect_fake.events)


def test_repeats_and_cluster_duplicates_start_nothing_new(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    body["alerts"] = body["alerts"][:2]
    threads = [threading.Thread(target=post, args=(client, "alertmanager", copy.deepcopy(body))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drained(client)
    post(client, "alertmanager", body)  # repeat_interval later
    drained(client)
    assert len(prefect_fake.runs) == 1
    assert {e["outcome"] for e in prefect_fake.events} == {"started", "joined"}


def test_new_firing_after_the_incident_closed_starts_the_next_episode(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    body["alerts"] = body["alerts"][:1]
    post(client, "alertmanager", body)
    drained(client)
    prefect_fake.close_all()

    post(client, "alertmanager", body)  # the same firing re-sent: the closed incident stays closed
    drained(client)
    assert len(prefect_fake.runs) == 1 and prefect_fake.events[-1]["outcome"] == "repeat-of-closed"

    body["alerts"][0]["startsAt"] = "2024-05-01T12:00:00Z"  # it fired again
    post(client, "alertmanager", body)
    drained(client)
    assert len(prefect_fake.runs) == 2
    first, second = prefect_fake.runs
    assert first["idempotency_key"].endswith(":1") and second["idempotency_key"].endswith(":2")

    post(client, "alertmanager", body)
    drained(client)
    assert len(prefect_fake.runs) == 2 and prefect_fake.events[-1]["outcome"] == "joined"


def test_resolution_reaches_the_open_incident_once_when_the_whole_group_resolved(make_client, prefect_fake):
    client = make_client()
    post(client, "alertmanager", fixture_json("alertmanager_mixed.json"))
    drained(client)
    run_id = prefect_fake.runs[0]["id"]
    resolved = fixture_json("alertmanager_resolved.json")
    only_first = {**resolved, "alerts": resolved["alerts"][:1]}
    post(client, "alertmanager", only_first)
    drained(client)
    assert prefect_fake.resolutions == [] and prefect_fake.events[-1]["outcome"] == "partly-resolved"
    for _ in range(3):  # Alertmanager re-sends resolved alerts; HA peers double them
        post(client, "alertmanager", resolved)
    post(client, "alertmanager", fixture_json("alertmanager_mixed.json"))  # a late firing re-send from a slow peer
    drained(client)
    assert [(rid, a["fingerprint"], a["status"]) for rid, a in prefect_fake.resolutions] == [(run_id, "a9b8c7d6e5f40312", "resolved")]
    assert prefect_fake.resolutions[0][1]["ends_at"] == "2024-05-01T09:12:00Z"
    assert len(prefect_fake.runs) == 1


def test_refiring_inside_an_open_incident_needs_a_new_resolution(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    body["alerts"] = body["alerts"][:1]
    post(client, "alertmanager", body)
    resolved = fixture_json("alertmanager_resolved.json")
    resolved["alerts"] = resolved["alerts"][:1]
    post(client, "alertmanager", resolved)
    body["alerts"][0]["startsAt"] = "2024-05-01T10:00:00Z"
    post(client, "alertmanager", body)
    resolved["alerts"][0]["startsAt"] = "2024-05-01T10:00:00Z"
    post(client, "alertmanager", resolved)
    drained(client)
    assert len(prefect_fake.runs) == 1 and len(prefect_fake.resolutions) == 2


def test_resolution_without_incident_or_after_close(make_client, prefect_fake):
    client = make_client()
    post(client, "alertmanager", fixture_json("alertmanager_resolved.json"))
    drained(client)
    assert prefect_fake.resolutions == [] and prefect_fake.events[-1]["outcome"] == "no-incident"
    post(client, "alertmanager", fixture_json("alertmanager_mixed.json"))
    drained(client)
    prefect_fake.close_all()
    post(client, "alertmanager", fixture_json("alertmanager_resolved.json"))
    drained(client)
    assert prefect_fake.resolutions == [] and prefect_fake.events[-1]["outcome"] == "incident-closed"


def test_groups_and_runbooks_are_separate_incidents(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    post(client, "alertmanager", body)
    body["groupKey"] = '{}/{env="prod"}:{alertname="HISDown", site="west"}'
    post(client, "alertmanager", body)
    post(client, "grafana", fixture_json("grafana_firing.json"))
    drained(client)
    assert len(prefect_fake.runs) == 3
    assert len({r["idempotency_key"] for r in prefect_fake.runs}) == 3


def test_crash_after_start_before_ledger_replays_to_the_same_run(tmp_path, prefect_fake, monkeypatch):
    """Started in Prefect, then the ledger write failed: the replay asks again with the same key."""
    store = Store(tmp_path)
    intake = Intake(store, start_incident=prefect_fake.start_incident, deliver_resolution=prefect_fake.deliver_resolution,
                    run_is_open=prefect_fake.run_is_open, emit=prefect_fake.emit)
    body = fixture_json("alertmanager_mixed.json")
    from integrations.alerts import get_source
    from integrations.alerts.routing import Decision

    a = get_source("alertmanager").parse(body)[0]
    decision = Decision("hospital-his-outage", "his", {"site": "x"}, "1")
    store.append([{"alert": a.model_dump(mode="json"), "decision": decision.__dict__}])

    real = store.open_episode
    calls = []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError("disk full")  # only the first time
        return real(*args)

    monkeypatch.setattr(store, "open_episode", flaky)
    drainer = Drainer(intake)
    assert drainer.drain_once() is False  # failed, stays pending
    assert store.pending_count() == 1
    assert drainer.drain_once() is True
    assert len(prefect_fake.starts) == 2 and len(prefect_fake.runs) == 1
    assert prefect_fake.starts[0]["idempotency_key"] == prefect_fake.starts[1]["idempotency_key"] \
        == idempotency_key("hospital-his-outage", a.group, 1)
    assert store.incident("hospital-his-outage", a.group).flow_run_id == prefect_fake.runs[0]["id"]


def test_a_persistently_failing_alert_is_set_aside(tmp_path, prefect_fake):
    store = Store(tmp_path)

    def broken(*a, **k):
        raise ValueError("deployment 'nope/runbook' not found")

    intake = Intake(store, start_incident=broken, run_is_open=prefect_fake.run_is_open, emit=prefect_fake.emit)
    from integrations.alerts import get_source

    alerts = get_source("generic").parse({"alerts": [{"status": "firing", "title": "a"}, {"status": "firing", "title": "b"}]})
    store.append([{"alert": x.model_dump(mode="json"), "decision": {"runbook": "nope", "parameters": {}}} for x in alerts])
    drainer = Drainer(intake, max_attempts=2)
    assert drainer.drain_once() is False
    assert drainer.drain_once() is True  # second failure: marked failed, the queue moves on
    rows = store.spool_rows()
    assert rows[0]["state"] == "failed" and "not found" in rows[0]["outcome"]
    assert rows[1]["state"] == "pending"
