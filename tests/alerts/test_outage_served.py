"""The Prefect server goes away for a minute while an alert storm arrives, with the runbook served (issue #11).

Everything runs as it does in `runbook up`: a Prefect server of the test's own, the fixture runbook `intake-watch`
served (`python -m app.stack serve`, runs started warm), the escalation watcher (`python -m app.stack watcher 1`)
and the receiver (`python -m app.stack intake`), flow runs sending heartbeats every 30 s. Incidents start before
the outage and are in their `check` step (which asks Prefect every second) when the server stops: their
processes lose Prefect mid-run and crash; nobody can write that down while the server is away. Meanwhile the
rest of the 30 groups' alerts arrive and wait in the receiver's spool.

Afterwards: exactly one incident per group, none left Crashed (the watcher finds the silent runs and sets them
going again), and a later alert of a group whose run crashed joins that run rather than counting it closed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.alerts.procs import (INTAKE_RUNBOOKS, PrefectServer, Receiver, Recorder, Served, Watcher, am_alert,
                                am_notification, flow_run_states, flow_runs, wait_for)

pytestmark = pytest.mark.server

GROUPS = 30
BEFORE = 8  # groups whose incidents start before the outage (the runbook runs 5 at once; the rest queue)
OUTAGE = 60  # seconds
HEARTBEAT = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}  # as `runbook up` sets it for every part
STARTS = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def watch(tag: str, n: int, recorder: str, instance: str = "a") -> dict:
    """Alertmanager's notification for group n: one IntakeWatch alert at site <tag>-<n>."""
    labels = {"alertname": f"IntakeWatch{n}", "site": f"{tag}-{n}", "service": "his", "instance": instance,
              "severity": "critical"}
    return am_notification(f'{{}}:{{alertname="IntakeWatch{n}", site="{tag}-{n}"}}',
                           [am_alert(labels, STARTS, annotations={"recorder": recorder})])


def incidents(api: str, tag: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in flow_runs(api, "intake-watch"):
        site = (run["parameters"].get("parameters") or {}).get("site", "")
        if site.startswith(f"{tag}-"):
            out.setdefault(site, []).append(run)
    return out


def send(receiver: Receiver, body: dict) -> None:
    r = receiver.post("alertmanager", body)
    assert r.status_code == 202, r.text


def dump_threads(receiver: Receiver) -> None:
    """The receiver writes every thread's stack to its log (app/intake.py dump_threads_on_signal): what it waits for."""
    os.kill(receiver.proc.pid, signal.SIGUSR1)
    time.sleep(1)


@pytest.mark.timeout(480)  # 4 to 5 min on a loaded 2-core machine: a fixed 60 s outage, then Prefect on SQLite catching up
def test_prefect_down_a_minute_under_served_incidents_and_an_alert_storm(tmp_path):
    tag = uuid.uuid4().hex[:8]
    server = PrefectServer(tmp_path / "prefect").start()
    recorder = Recorder()
    parts = []
    try:
        served = Served(server.api, server.home, log=tmp_path / "serve.log", **HEARTBEAT)
        parts.append(served.start(["intake-watch"]))
        parts.append(Watcher(server.api, server.home, INTAKE_RUNBOOKS, every=1, log=tmp_path / "watcher.log",
                             **HEARTBEAT).start())
        receiver = Receiver(server.api, server.home, tmp_path / "var", log=tmp_path / "receiver.log").start()
        parts.append(receiver)

        for n in range(BEFORE):
            send(receiver, watch(tag, n, recorder.url))
        # incidents under way: their first step has acted, their check asks Prefect every second
        wait_for(lambda: len({c["body"]["run"] for c in recorder.calls}) >= 3, 90, "incidents to be running", every=0.5)

        server.stop()
        down = time.monotonic()
        for n in range(BEFORE, GROUPS):  # the storm, spread over the outage; some groups fire twice
            send(receiver, watch(tag, n, recorder.url))
            if n % 4 == 0:
                send(receiver, watch(tag, n, recorder.url, instance="b"))
            time.sleep(1)
        assert receiver.healthz()["spool_pending"] > 0, "Prefect is away: the alerts wait in the spool"
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
        server.start()

        back = time.monotonic()
        try:  # Prefect on SQLite answers 503 to much for a minute after it is back; the drainer asks again itself
            wait_for(lambda: receiver.pending() == 0, 120, "the spool to drain once Prefect is back", every=0.5)
        except TimeoutError:
            dump_threads(receiver)
            raise
        print(f"drained {time.monotonic() - back:.0f} s after Prefect was back")
        runs = incidents(server.api, tag)
        assert sorted(runs) == sorted(f"{tag}-{n}" for n in range(GROUPS)), sorted(runs)
        assert all(len(r) == 1 for r in runs.values()), {site: len(r) for site, r in runs.items() if len(r) != 1}

        def history(run: dict) -> list[str]:
            return [s["name"] for s in flow_run_states(server.api, run["id"])]

        def healed() -> dict[str, list[str]] | None:
            """Every incident's states, once none is Crashed, Pending (a process that may have died with the server,
            not yet judged) or Failed (an incident must not fail because Prefect was away)."""
            now = {site: r[0]["state"]["name"] for site, r in incidents(server.api, tag).items()}
            if {"Crashed", "Pending", "Failed"} & set(now.values()):
                return None
            return {site: history(r[0]) for site, r in runs.items() if site in now and now[site] != "Scheduled"}

        time.sleep(10)  # a Pending run whose process died with the server is judged dead after its silence limit
        try:
            states = wait_for(healed, 150, "the incidents to be going again, none crashed", every=2)
        except TimeoutError:  # what is stuck, and what the watcher said about it
            stuck = {site: [s["name"] for s in flow_run_states(server.api, r[0]["id"])] + [r[0]["state"].get("message")]
                     for site, r in incidents(server.api, tag).items()
                     if r[0]["state"]["name"] in ("Crashed", "Pending", "Failed")}
            print("stuck:", stuck)
            print("watcher log, last lines:", *(tmp_path / "watcher.log").read_text().splitlines()[-80:], sep="\n")
            raise
        crashed = sorted(site for site, h in states.items() if "Crashed" in h)
        assert all(states[site][states[site].index("Crashed") + 1:][:1] == ["Recovering"] for site in crashed), states
        # a later alert of a group whose run crashed joins that run: a crash does not close an incident
        # (an incident whose process lived through the outage is joined the same way)
        site = crashed[0] if crashed else next(site for site, r in sorted(incidents(server.api, tag).items())
                                               if r[0]["state"]["type"] in ("RUNNING", "PAUSED"))
        send(receiver, watch(tag, int(site.rsplit("-", 1)[1]), recorder.url, instance="c"))
        try:
            wait_for(lambda: receiver.pending() == 0, 60, "the later alert to be handled", every=0.3)
        except TimeoutError:
            dump_threads(receiver)
            raise
        last = receiver.spool()[-1]
        assert last["outcome"] == f"joined {runs[site][0]['id']}", last
        after = incidents(server.api, tag)
        assert sum(len(r) for r in after.values()) == GROUPS, "still one incident per group"
        assert not [s for s, r in after.items() if r[0]["state"]["name"] == "Crashed"], "none left Crashed"
        print(f"crashed and healed: {len(crashed)} of {GROUPS}: {crashed}")
    finally:
        for part in reversed(parts):
            part.stop()
        server.stop()
        recorder.close()
