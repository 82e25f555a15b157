"""Durability: accepted alerts are on disk before the 202, survive restarts, wait out a Prefect
outage and are replayed (each group's alerts in order), none started twice."""

from __future__ import annotations

import socket

import httpx
import pytest

from tasks.inputs import prefect_away as is_transient
from integrations.alerts.store import Store
from tests.alerts.conftest import drained, stop, wait_until


def notification(n: int) -> dict:
    return {"status": "firing", "title": f"UPS {n} on battery", "labels": {"runbook": "power-failure", "site": f"s{n}"},
            "group": f"outage-{n}"}


def test_spooled_before_the_answer(make_client, make_settings):
    settings = make_settings()
    client = make_client(settings, drain=False)
    r = client.post("/alerts/generic", json=notification(1))
    assert r.status_code == 202
    # another process opening the state dir sees it at once
    rows = Store(settings.state_dir).spool_rows()
    assert [(row["id"], row["state"]) for row in rows] == [(r.json()["accepted"][0]["spool_id"], "pending")]


def test_prefect_outage_then_replay_in_order(make_client, prefect_fake):
    client = make_client()
    prefect_fake.down = True
    for n in range(5):
        assert client.post("/alerts/generic", json=notification(n)).status_code == 202
    wait_until(lambda: not client.app.state.drainer.prefect_reachable, what="the drainer to notice the outage")
    health = client.get("/healthz").json()
    assert health["spool_pending"] == 5 and health["prefect_reachable"] is False
    assert prefect_fake.runs == []

    prefect_fake.down = False
    client.app.state.drainer.wake()
    drained(client)
    # one incident per group; groups are handed over side by side, so their order across groups is not kept
    assert sorted(r["parameters"]["site"] for r in prefect_fake.runs) == [f"s{n}" for n in range(5)]
    assert client.get("/healthz").json()["prefect_reachable"] is True


def test_restart_keeps_what_was_accepted(make_client, make_settings, prefect_fake):
    settings = make_settings()
    first = make_client(settings)
    first.post("/alerts/generic", json=notification(0))
    drained(first)
    prefect_fake.down = True
    for n in range(1, 4):
        first.post("/alerts/generic", json=notification(n))
    stop(first)  # the receiver goes away with three alerts not yet in Prefect
    assert Store(settings.state_dir).pending_count() == 3

    prefect_fake.down = False
    second = make_client(settings)  # same state dir, Prefect is back
    drained(second)
    assert sorted(r["parameters"]["site"] for r in prefect_fake.runs) == ["s0", "s1", "s2", "s3"]
    # re-sends of the same groups after the restart join the open incidents
    for n in range(4):
        second.post("/alerts/generic", json=notification(n))
    drained(second)
    assert len(prefect_fake.runs) == 4


def test_resolution_waits_for_prefect_too(make_client, prefect_fake):
    client = make_client()
    client.post("/alerts/generic", json=notification(1))
    drained(client)
    prefect_fake.down = True
    client.post("/alerts/generic", json={**notification(1), "status": "resolved"})
    wait_until(lambda: not client.app.state.drainer.prefect_reachable, what="the outage")
    prefect_fake.down = False
    client.app.state.drainer.wake()
    drained(client)
    assert len(prefect_fake.resolutions) == 1


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def test_unreachable_prefect_is_recognised_as_transient():
    """The real errors an unreachable API gives are the ones the drainer waits out."""
    from prefect.client.orchestration import SyncPrefectClient

    with pytest.raises(Exception) as caught:
        with SyncPrefectClient(dead_url()) as client:
            client.read_flow_run("00000000-0000-0000-0000-000000000000")
    assert is_transient(caught.value), repr(caught.value)
    with pytest.raises(httpx.ConnectError) as caught:
        httpx.get(dead_url())
    assert is_transient(caught.value)
    response = httpx.Response(503, request=httpx.Request("GET", "http://x"))
    assert is_transient(httpx.HTTPStatusError("down", request=response.request, response=response))
    response = httpx.Response(404, request=httpx.Request("GET", "http://x"))
    assert not is_transient(httpx.HTTPStatusError("nope", request=response.request, response=response))
    assert not is_transient(ValueError("bad parameters"))
