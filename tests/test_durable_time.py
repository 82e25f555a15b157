"""Time keeps running with no process of the incident alive, and a killed incident heals itself.

On the served path (`python -m app.stack serve`, waits suspended, their processes gone) with
two escalation watchers running at once, as `runbook up` and production have them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest

from prefect.client.orchestration import get_client

from flows.answers import answer_step
from flows.launch import start_incident
from flows.record.timeline import journal_from_events
from tests.alerts.procs import run_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "durable"


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.stack", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The fixture runbooks served, and two escalation watchers polling every second; beside them the watcher
    of another stack on the same Prefect server (the project's own runbooks), which must leave these alone."""
    logs = tmp_path_factory.mktemp("durable")
    env = {"RUNBOOK_RUNBOOKS_DIR": str(FIXTURES), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    procs = [_start(["serve"], logs / "serve.log", **env),
             _start(["watcher", "1"], logs / "watcher-1.log", **env),
             _start(["watcher", "1"], logs / "watcher-2.log", **env),
             _start(["watcher", "1"], logs / "watcher-other.log", **{**env, "RUNBOOK_RUNBOOKS_DIR": str(ROOT / "runbooks")})]
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        for name in ("clock-drill", "wait-kill", "slot-drill", "met-then-wait"):
            while True:
                try:
                    client.read_deployment_by_name(f"{name}/runbook")
                    break
                except Exception:
                    assert time.monotonic() < deadline, (logs / "serve.log").read_text()[-3000:]
                    time.sleep(0.5)
    yield logs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def state_of(run_id) -> "object":
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id))).state


def wait_until(what: str, check, seconds: float):
    return wait_for(check, seconds, what, every=0.5)


def kinds(run_id) -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in journal_from_events(str(run_id))]


def test_thresholds_and_deadlines_fire_while_the_wait_is_suspended(served):
    """10-minute threshold and 20-minute deadline at time scale 60: due after 10 s and 20 s, with no process alive."""
    run = start_incident("clock-drill", {}, time_scale=60)
    wait_until("the wait to suspend", lambda: state_of(run.id).name == "Suspended", 60)
    fired = wait_until("the threshold and the missed deadline", lambda: (
        {("threshold.fired", "ten-minutes"), ("deadline.missed", "report-within-20")} <= set(kinds(run.id))), 45)
    assert fired
    assert state_of(run.id).name == "Suspended", "the run waits on for its answer"
    time.sleep(4)  # two watchers keep passing: nothing fires twice
    journal = kinds(run.id)
    assert journal.count(("page.sent", "tell-ten-minutes")) == 1, journal
    assert journal.count(("page.sent", "tell-report-late")) == 1, journal
    assert journal.count(("threshold.fired", "ten-minutes")) == 1 and journal.count(("deadline.missed", "report-within-20")) == 1
    assert journal.count(("incident.started", None)) == 1, "one incident, woken, not started again"

    result = answer_step(str(run.id), by="wang-chief", values={"restored": "yes"})
    assert result.ok, result.message
    final = wait_until("the incident to finish", lambda: (s := state_of(run.id)).is_final() and s, 60)
    assert final.is_completed(), final.message
    # the journal is read from Prefect's events, which the server files a moment after the run ends
    journal = wait_until("the answer in the journal", lambda: (j := kinds(run.id)) and ("step.answered", "confirm-recovery") in j and j, 20)
    assert journal.count(("step.answered", "confirm-recovery")) == 1, journal
    assert ("deadline.unmet", "report-within-20") not in journal, "a missed deadline is not also left unmet"


def test_a_deadline_met_and_a_threshold_cancelled_before_a_wait_stay_so_when_it_resumes_after_they_were_due(served):
    """The report and the wards' notice go out at once (deadline met, thresholds cancelled); the answer comes after
    all were due. The resumed attempt's time rules start before its walk has replayed those steps."""
    began = time.monotonic()
    run = start_incident("met-then-wait", {}, time_scale=60)  # thresholds due after 10 s, the deadline after 15 s
    wait_until("the wait to suspend", lambda: state_of(run.id).name == "Suspended", 60)
    time.sleep(max(0.0, 17 - (time.monotonic() - began)))
    assert answer_step(str(run.id), by="wang-chief", values={"restored": "yes"}).ok
    final = wait_until("the incident to finish", lambda: (s := state_of(run.id)).is_final() and s, 60)
    assert final.is_completed(), final.message
    journal = wait_until("the close in the journal", lambda: (j := kinds(run.id)) and ("incident.closed", None) in j and j, 20)
    assert journal.count(("incident.resumed", None)) == 1, journal
    assert ("deadline.missed", "report-within-15") not in journal and ("page.sent", "tell-report-late") not in journal, journal
    for threshold, notice in (("ten-minutes", "tell-ten-minutes"), ("wards-ten-minutes", "tell-wards-late")):
        assert ("threshold.fired", threshold) not in journal and ("page.sent", notice) not in journal, journal
        assert journal.count(("threshold.cancelled", threshold)) == 1, journal
    assert journal.count(("deadline.met", "report-within-15")) == 1, journal


class Endpoint(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self):  # noqa: N802
        Endpoint.calls.append(self.path)
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def flow_process(run_id) -> int | None:
    with get_client(sync_client=True) as client:
        return run_process(str(run_id), client.read_flow_run(UUID(str(run_id))).infrastructure_pid)


def test_an_incident_killed_during_a_wait_heals_itself_and_acts_once(served):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.calls = []
    try:
        run = start_incident("wait-kill", {"base_url": f"http://127.0.0.1:{server.server_port}"})
        wait_until("the first action", lambda: Endpoint.calls == ["/first"], 60)
        pid = wait_until("the flow's process", lambda: flow_process(run.id), 20)
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)  # no command typed after this
        final = wait_until("the incident to finish by itself", lambda: (s := state_of(run.id)).is_final()
                           and s.name != "Crashed" and s, 120)
        assert final.is_completed(), final.message
    finally:
        server.shutdown()
    assert Endpoint.calls == ["/first", "/second"], "each action's endpoint got exactly one request"
    journal = kinds(run.id)
    assert ("incident.recovered", None) in journal, journal
    assert journal.count(("incident.started", None)) == 1


def test_escalation_of_a_waiting_incident_never_queues_behind_new_incidents(served):
    """The runbook allows one incident at work; another holds that slot and a third queues: the tier pages on time."""
    waiting = start_incident("slot-drill", {"busy": False})
    wait_until("the wait to suspend", lambda: state_of(waiting.id).name == "Suspended", 60)
    with get_client(sync_client=True) as client:
        waiting_since = next(s.timestamp for s in client.read_flow_run_states(waiting.id) if s.name == "Suspended")
    busy = start_incident("slot-drill", {"busy": True})
    wait_until("the busy incident to hold the slot", lambda: state_of(busy.id).name == "Running", 60)
    queued = start_incident("slot-drill", {"busy": True})
    tier = wait_until("the tier", lambda: next((e for e in journal_from_events(str(waiting.id)) if e.kind == "escalation.tier"), None), 30)
    assert state_of(busy.id).name == "Running", "the slot was taken the whole time"
    assert state_of(queued.id).name in ("Scheduled", "AwaitingConcurrencySlot", "Pending"), state_of(queued.id).name
    late = (tier.at - waiting_since).total_seconds() - 8
    assert late < 5, f"the tier was due 8 s after the wait began and paged {late:.1f} s late"
    assert state_of(waiting.id).name == "Suspended", "paging the tier took no process of the incident"


def test_a_refused_answer_is_on_the_journal_from_any_path_and_pages_no_one(served):
    """A resume forged straight through Prefect's API (as the UI resumes) and a refused CLI answer: both traced."""
    run = start_incident("clock-drill", {})  # at time scale 1 nothing else is due for ten minutes
    wait_until("the wait to suspend", lambda: state_of(run.id).name == "Suspended", 60)
    with get_client(sync_client=True) as client:
        assert client.resume_flow_run(run.id, run_input={"answered_by": "stranger", "restored": True}).status.value == "ACCEPT"
    refused = wait_until("the refusal on the journal", lambda: [e for e in journal_from_events(str(run.id))
                                                               if e.kind == "answer.refused"], 60)
    assert refused[0].actor == "stranger" and refused[0].data.get("via") == "prefect-api" and "may not answer" in refused[0].text
    wait_until("the step to wait again", lambda: state_of(run.id).name == "Suspended", 60)
    result = answer_step(str(run.id), by="stranger", values={"restored": "yes"})
    assert not result.ok
    cli_refusal = wait_until("the CLI refusal on the journal", lambda: [e for e in journal_from_events(str(run.id))
                                                                       if e.kind == "answer.refused" and e.data.get("via") == "cli"], 30)
    assert cli_refusal[0].actor == "stranger"
    journal = kinds(run.id)
    assert journal.count(("page.sent", "confirm-recovery")) == 1, "only the wait's first page: a refused answer pages nobody"
    assert answer_step(str(run.id), by="wang-chief", values={"restored": "yes"}).ok
    assert wait_until("the incident to finish", lambda: (s := state_of(run.id)).is_final() and s, 60).is_completed()
