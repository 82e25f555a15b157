"""A long `wait` step on a deployment frees its process: the run is Suspended until the wait's end.

On the served path (`python -m app.stack serve`, runs forked warm) with an escalation watcher polling every
second: the watcher wakes the run for a threshold and a deadline that fall inside the wait (the woken run fires
them and suspends again) and at the wait's end, when the step completes and the runbook goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest

from prefect.client.orchestration import get_client

from flows.catalog import make_flow
from flows.launch import start_incident
from flows.record.archive import find_record
from flows.record.timeline import journal_from_events
from runbooks.loader import load_file
from runbooks.settings import get_settings
from tasks.inputs import read_input
from tasks.records import done_record
from tests.alerts.procs import run_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "waits"
SUSPEND_AFTER = 10  # real seconds left above which a wait suspends (30 by default): a 30 s wait suspends, as do its rests


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.stack", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logs = tmp_path_factory.mktemp("waits")
    env = {"RUNBOOK_RUNBOOKS_DIR": str(FIXTURES), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "RUNBOOK_SUSPEND_WAIT_AFTER": str(SUSPEND_AFTER)}
    procs = [_start(["serve"], logs / "serve.log", **env), _start(["watcher", "1"], logs / "watcher.log", **env)]
    try:
        with get_client(sync_client=True) as client:
            def deployed():
                try:
                    return client.read_deployment_by_name("long-wait/runbook")
                except Exception:
                    return None
            wait_for(deployed, 90, "the fixture runbook's deployment", every=0.5)
        yield logs
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


class Endpoint(BaseHTTPRequestHandler):
    calls: list[tuple[str, float]] = []

    def do_POST(self):  # noqa: N802
        Endpoint.calls.append((self.path, time.time()))
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def paths() -> list[str]:
    return [p for p, _ in Endpoint.calls]


def state_of(run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id))).state


def kinds(run_id) -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in journal_from_events(str(run_id))]


def flow_process(run_id) -> int | None:
    with get_client(sync_client=True) as client:
        return run_process(str(run_id), client.read_flow_run(UUID(str(run_id))).infrastructure_pid)


def suspended_with_no_process(run_id) -> bool:
    return state_of(run_id).name == "Suspended" and flow_process(run_id) is None


def test_a_long_wait_frees_its_process_and_its_time_rules_fire_meanwhile(served):
    """An hour's wait at time scale 120 (30 s): a 10-minute threshold (5 s) and a 20-minute deadline (10 s) inside it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.calls = []
    try:
        run = start_incident("long-wait", {"base_url": f"http://127.0.0.1:{server.server_port}"}, time_scale=120)
        wait_for(lambda: suspended_with_no_process(run.id), 60, "the wait to suspend and its process to exit", every=0.25)
        assert paths() == ["/first"]
        with get_client(sync_client=True) as client:
            began = datetime.fromisoformat(read_input(client, run.id, "once-wait-observe")).timestamp()
        end = began + 30

        # the threshold and the missed deadline fire (the watcher wakes the run; the woken run fires them and
        # suspends again with the wait's rest: no process while it waits)
        wait_for(lambda: {"/threshold", "/late"} <= set(paths()), 40, "the threshold's and the deadline's calls", every=0.25)
        wait_for(lambda: suspended_with_no_process(run.id), 20, "the run to suspend again", every=0.25)
        assert "/second" not in paths() and time.time() < end - 3, "the time rules fired inside the wait"

        final = wait_for(lambda: (s := state_of(run.id)).is_final() and s, 60, "the incident to finish", every=0.5)
        assert final.is_completed(), final.message
    finally:
        server.shutdown()
    assert sorted(paths()) == ["/first", "/late", "/second", "/threshold"], "each action once: " + repr(paths())
    second = next(t for p, t in Endpoint.calls if p == "/second")
    print(f"the second action came {second - end:.1f} s after the wait's end")
    assert end <= second < end + 15, f"the second action came {second - end:.1f} s after the wait's end"

    with get_client(sync_client=True) as client:
        record = done_record(client, run.id, "observe")
        states = [s.name for s in client.read_flow_run_states(run.id)]
    assert '"waited_seconds": 30.0' in record.replace('\\"', '"'), record
    # at the start, and again after the wake that fired the time rules (one wake fires both when the threshold's
    # is late enough that the deadline is due too: the machine is loaded)
    assert states.count("Suspended") >= 2, f"suspended at the start and again after the time rules' wake-up: {states}"
    journal = wait_for(lambda: (j := kinds(run.id)) and ("incident.closed", None) in j and j, 20, "the journal's close")
    assert journal.count(("incident.started", None)) == 1, "one incident, woken, not started again"
    assert journal.count(("threshold.fired", "ten-minutes")) == 1 and journal.count(("deadline.missed", "second-within-20")) == 1
    assert ("step.done", "observe") in journal


def test_a_wait_run_locally_sleeps_in_its_process(monkeypatch, request):
    """`runbook run` (no deployment): nothing could run the flow again, so even a wait over the threshold sleeps."""
    monkeypatch.setenv("RUNBOOK_SUSPEND_WAIT_AFTER", "0")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)  # the next test reads its own settings again
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.calls = []
    try:
        flow = make_flow(load_file(FIXTURES / "long-wait.yaml"))
        started = time.monotonic()
        state = flow(parameters={"base_url": f"http://127.0.0.1:{server.server_port}"}, time_scale=1800, return_state=True)
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert state.is_completed(), state.message
    calls = [(p, t) for p, t in Endpoint.calls if p in ("/first", "/second")]  # the time rules fire too, at this scale
    assert [p for p, _ in calls] == ["/first", "/second"]
    first, second = (t for _, t in calls)
    assert 2.0 <= second - first < 6, f"the 2 s wait took {second - first:.2f} s"
    record = find_record(str(state.state_details.flow_run_id))
    assert record.steps["observe"]["waited_seconds"] == 2.0 and "step.waiting" not in record.kinds()
    assert took < 20


def test_a_replay_takes_the_attempts_first_read_only_when_it_settles_the_step():
    """The inputs read as the attempt began settle a step's earlier asks when the step had none, or its last one was
    answered or expired; an ask still open then, or a pause key past them that Prefect says has fired (an earlier
    attempt asked more than the read shows), sends the replay to the server."""
    from tasks.people import _earlier_asks

    class Server:
        def __init__(self):
            self.asked = []

        def filter_flow_run_input(self, flow_run_id, key_prefix, limit, exclude_keys):
            self.asked.append(key_prefix)
            return []

    answered = {"suspended-confirm-1-who": "{}", "suspended-confirm-1-response": "{}"}
    still_open = {"suspended-confirm-1-who": "{}"}
    cases = [({}, set(), False), (answered, {"confirm-1"}, False), (still_open, {"confirm-1"}, True),
             ({}, {"confirm-1"}, True), (answered, {"confirm-1", "confirm-2"}, True)]
    for known, fired, asks_server in cases:
        server = Server()
        _earlier_asks(server, "run", "confirm", 1, known, fired)
        assert bool(server.asked) == asks_server, (known, fired)
