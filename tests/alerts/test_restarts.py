"""The receiver and the Prefect API going down and coming back, with real processes.

The receiver runs as `python -m app.stack intake` (its own state dir, explicit env);
incidents go to the deployment `intake-hold/runbook`, registered and served by nobody,
so its runs stay Scheduled (open) and what is tested is the intake's own bookkeeping:
every accepted alert handled (each group's in order), each incident started exactly once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.alerts.procs import PrefectServer, Receiver, SlowLink, am_alert, am_notification, flow_runs, free_port, register_unserved, wait_for

pytestmark = pytest.mark.server

STARTS = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def hold(tag: str, n: int, instance: str = "a") -> dict:
    """Alertmanager's notification for group n: one IntakeHold alert at site <tag>-<n>."""
    labels = {"alertname": f"IntakeHold{n}", "site": f"{tag}-{n}", "instance": instance, "severity": "critical"}
    return am_notification(f'{{}}:{{alertname="IntakeHold{n}", site="{tag}-{n}"}}', [am_alert(labels, STARTS)])


def accept(receiver: Receiver, body: dict) -> int:
    r = receiver.post("alertmanager", body)
    assert r.status_code == 202, r.text
    (accepted,) = r.json()["accepted"]
    return accepted["spool_id"]


def runs_by_site(api: str, tag: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in flow_runs(api, "intake-hold"):
        site = (run["parameters"].get("parameters") or {}).get("site", "")
        if site.startswith(f"{tag}-"):
            out.setdefault(site, []).append(run)
    return out


def dead_api() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


def test_receiver_killed_before_draining_loses_nothing_and_starts_nothing_twice(prefect_api, prefect_home, tmp_path):
    register_unserved(prefect_api, "intake-hold")
    tag = uuid.uuid4().hex[:8]
    receiver = Receiver(prefect_api, prefect_home, tmp_path / "var", log=tmp_path / "receiver.log")
    try:
        # first life: one incident started
        receiver.start()
        accept(receiver, hold(tag, 0))
        wait_for(lambda: receiver.pending() == 0, 30, "the first alert to be handled")
        assert list(runs_by_site(prefect_api, tag)) == [f"{tag}-0"]

        # second life: Prefect unreachable; alerts are accepted (on disk) but cannot be handed over
        receiver.kill()
        receiver.start(api=dead_api())
        order = [1, 0, 2, 1, 3]  # group 0 again (a repeat), group 1 twice (an HA pair)
        ids = [accept(receiver, hold(tag, n, instance="a")) for n in order]
        assert ids == sorted(ids)
        wait_for(lambda: receiver.healthz()["prefect_reachable"] is False, 30, "the drainer to find Prefect unreachable")
        assert receiver.healthz()["spool_pending"] == 5
        receiver.kill()  # SIGKILL: nothing in memory survives
        assert receiver.proc.returncode == -9
        assert receiver.pending() == 5

        # third life: Prefect is back; the spool drains, each group in order
        receiver.start(api=prefect_api)
        wait_for(lambda: receiver.pending() == 0, 60, "the spool to drain after the restart")
    finally:
        receiver.stop()

    runs = runs_by_site(prefect_api, tag)
    assert sorted(runs) == [f"{tag}-{n}" for n in range(4)]
    assert all(len(r) == 1 for r in runs.values()), {site: len(r) for site, r in runs.items()}
    run = {n: runs[f"{tag}-{n}"][0]["id"] for n in range(4)}
    rows = receiver.spool()
    assert [r["state"] for r in rows] == ["done"] * 6
    assert [r["outcome"] for r in rows] == [f"started {run[0]}", f"started {run[1]}", f"joined {run[0]}",
                                            f"started {run[2]}", f"joined {run[1]}", f"started {run[3]}"]


def test_receiver_killed_while_draining_starts_each_incident_once(prefect_api, prefect_home, tmp_path):
    """SIGKILL in the middle of a drain: whatever was half done (a run created, the spool not yet told) is
    asked again with the same idempotency key and gets the same run. The receiver reaches Prefect through a
    slow link, so the kill lands after the batch's runs are created (together, in one bulk create) and before
    its alerts are marked handled."""
    register_unserved(prefect_api, "intake-hold")
    tag = uuid.uuid4().hex[:8]
    slow = SlowLink(prefect_api, delay=0.25)
    receiver = Receiver(prefect_api, prefect_home, tmp_path / "var", log=tmp_path / "receiver.log")
    groups = list(range(12))
    try:
        receiver.start(api=slow.api)
        for n in groups:
            accept(receiver, hold(tag, n))
        created = wait_for(lambda: len(runs_by_site(prefect_api, tag)) or None, 60, "the drain to create runs", every=0.05)
        receiver.kill()
        left = receiver.pending()
        receiver.start(api=prefect_api)
        for n in groups[:4]:  # and re-sends of groups already handled
            accept(receiver, hold(tag, n))
        wait_for(lambda: receiver.pending() == 0, 60, "the spool to drain after the restart")
    finally:
        receiver.stop()
        slow.close()
    # killed with runs made whose alerts were not yet marked handled (more pending than groups without a run)
    assert left > len(groups) - created, f"killed in the middle of the drain ({created} runs made, {left} left)"
    runs = runs_by_site(prefect_api, tag)
    assert sorted(runs) == sorted(f"{tag}-{n}" for n in groups)
    assert all(len(r) == 1 for r in runs.values()), {site: len(r) for site, r in runs.items()}
    outcomes = [r["outcome"].split()[0] for r in receiver.spool()]
    assert outcomes.count("started") >= len(groups) - created  # those cut short may be replayed as "joined"
    assert outcomes[-4:] == ["joined"] * 4


def test_prefect_server_down_and_up_replays_in_order_each_incident_once(tmp_path):
    """A Prefect server of this test's own: stopped, alerts keep coming (202), started again on the same
    port and home; the backlog is replayed (each group in order) and every incident is started exactly once."""
    server = PrefectServer(tmp_path / "prefect").start()
    receiver = None
    tag = uuid.uuid4().hex[:8]
    try:
        register_unserved(server.api, "intake-hold")
        receiver = Receiver(server.api, server.home, tmp_path / "var", log=tmp_path / "receiver.log").start()
        accept(receiver, hold(tag, 0))
        wait_for(lambda: receiver.pending() == 0, 30, "the first alert to be handled")

        server.stop()
        assert not server.reachable()
        order = [1, 0, 2, 1, 3, 4, 2]
        for n in order:
            accept(receiver, hold(tag, n))
        wait_for(lambda: receiver.healthz()["prefect_reachable"] is False, 30, "the receiver to notice the outage")
        health = receiver.healthz()
        assert health["spool_pending"] == len(order)

        server.start()
        wait_for(lambda: receiver.pending() == 0, 90, "the backlog to be replayed")
        assert receiver.healthz()["prefect_reachable"] is True
        runs = runs_by_site(server.api, tag)
    finally:
        if receiver:
            receiver.stop()
        server.stop()

    assert sorted(runs) == [f"{tag}-{n}" for n in range(5)]
    assert all(len(r) == 1 for r in runs.values()), {site: len(r) for site, r in runs.items()}
    run = {n: runs[f"{tag}-{n}"][0]["id"] for n in range(5)}
    assert [r["outcome"] for r in receiver.spool()] == [
        f"started {run[0]}",
        f"started {run[1]}", f"joined {run[0]}", f"started {run[2]}", f"joined {run[1]}",
        f"started {run[3]}", f"started {run[4]}", f"joined {run[2]}"]
    assert all(runs[f"{tag}-{n}"][0]["idempotency_key"].endswith(":1") for n in range(5))
