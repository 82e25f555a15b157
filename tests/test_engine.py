"""The runbook engine against a real Prefect server: people answering, escalation, expiry, retries, timeouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.answers import answer_step, pending_steps
from tests.drill import Background, pause_key, wait_for_step
from flows.record.archive import find_record
from flows.catalog import make_flow
from integrations.contacts import load_directory
from runbooks.loader import load_file

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "tests" / "fixtures" / "engine"
DIRECTORY = load_directory(ROOT / "config" / "contacts.yaml")


def fixture_flow(name: str):
    return make_flow(load_file(ENGINE / f"{name}.yaml", DIRECTORY))


def test_manual_step_answered_through_the_resume_api_records_who_answered():
    run = Background(fixture_flow("approval-drill"), parameters={"system": "HIS"}, drill=True)
    waiting = wait_for_step("record-fault")
    run_id = waiting.flow_run_id
    assert set(waiting.may_answer) == {"wang-chief", "li-deputy", "drill-desk"}  # a drill's recipients may answer it

    # A wrong type is refused by the server (as in the UI's form): the run stays paused at the same ask.
    with get_client(sync_client=True) as client:
        refused = client.resume_flow_run(UUID(run_id), run_input={"answered_by": "li-deputy", "clients_affected": "many", "scope": "inside"})
    assert refused.status.value != "ACCEPT"
    assert pause_key(run_id) == "record-fault-1"

    # Someone who may not answer, answering through the raw API as the UI would: the run refuses and asks again.
    with get_client(sync_client=True) as client:
        accepted = client.resume_flow_run(UUID(run_id), run_input={"answered_by": "zhao-dispatch", "clients_affected": 3, "scope": "inside"})
    assert accepted.status.value == "ACCEPT", accepted.details
    deadline = time.monotonic() + 15
    while pause_key(run_id) != "record-fault-2":
        assert time.monotonic() < deadline, "the step did not ask again after a refused answer"
        time.sleep(0.3)

    # The CLI / webhook path checks the person before resuming.
    assert not answer_step(run_id, by="zhao-dispatch", values={"clients_affected": 3, "scope": "inside"}).ok
    time.sleep(2.5)  # let the escalation tier (2 s) page dispatch while the step waits
    result = answer_step(run_id, by="李副值 Li (deputy operator)", values={"clients_affected": "12", "scope": "outside"}, step="record-fault")
    assert result.ok, result.message
    assert result.answered_by == "li-deputy"

    wait_for_step("approve-restart", run_id=run_id)
    refused = answer_step(run_id, by="li-deputy", values={"decision": "approve"})
    assert not refused.ok and "may not answer" in refused.message
    assert answer_step(run_id, by="wang-chief", values={"decision": "approve", "comment": "go"}).ok

    state = run.join()
    assert state.is_completed() and state.name == "Completed"
    record = find_record(run_id)
    assert record.steps["record-fault"]["answered_by"] == "li-deputy"
    assert record.steps["record-fault"]["clients_affected"] == 12
    assert record.steps["record-fault"]["scope"] == "outside"
    assert record.steps["approve-restart"]["answered_by"] == "wang-chief"
    kinds = record.kinds()
    assert "answer.refused" in kinds
    escalation = kinds.index("escalation.tier")
    assert escalation < kinds.index("step.answered"), "escalation must fire while the step waits"
    paged = [e for e in record.journal[escalation:] if e.kind == "page.sent"]
    assert paged and paged[0].data["person"] == "drill-desk"  # a drill pages the drill desk, not dispatch
    assert [e.actor for e in record.entries("step.answered")] == ["li-deputy", "wang-chief"]


def test_an_unanswered_approval_takes_its_expiry_branch_and_the_run_says_so():
    flow = fixture_flow("approval-drill")
    started = time.monotonic()
    with tags("test"):
        state = flow(answers={"record-fault": {"clients_affected": 1, "scope": "inside"}}, return_state=True)
    took = time.monotonic() - started
    assert state.is_completed() and state.name == "Expired"
    record = find_record(str(state.state_details.flow_run_id))
    kinds = record.kinds()
    assert record.outcome == "expired"
    assert kinds.index("escalation.tier") < kinds.index("step.expired")
    assert [e.step for e in record.entries("step.done")][-1] == "tell-dispatch-expired"
    assert "restart" not in record.steps
    assert 4 <= took < 30


def test_a_rejected_approval_runs_its_reject_steps_and_ends_rejected():
    with tags("test"):
        state = fixture_flow("approval-drill")(answers={"record-fault": {"clients_affected": 1, "scope": "inside"},
                                                        "approve-restart": {"decision": "reject", "comment": "not now"}},
                                               return_state=True)
    assert state.name == "Rejected"
    record = find_record(str(state.state_details.flow_run_id))
    assert record.entries("approval.rejected")[0].actor == "wang-chief"
    assert record.steps["tell-dispatch-rejected"]["status"] == "done"
    assert "restart" not in record.steps


def test_scripted_answer_that_is_invalid_fails_clearly():
    with tags("test"):
        state = fixture_flow("approval-drill")(answers={"record-fault": {"clients_affected": "lots", "scope": "inside"}}, return_state=True)
    assert state.is_failed()
    assert "scripted answer for 'record-fault' is not valid" in state.message


# ---------------------------------------------------------------- from a deployment


class FlakyEndpoint(BaseHTTPRequestHandler):
    calls: dict[str, list[float]] = {"/flaky": [], "/slow": []}

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.calls["/flaky"].append(time.monotonic())
        status = 503 if len(self.calls["/flaky"]) <= 2 else 200
        self._answer(status, {"blocked": status == 200})

    def do_GET(self):
        self.calls["/slow"].append(time.monotonic())
        time.sleep(3)
        self._answer(200, {"ok": True})

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def served_fixtures():
    env = {**os.environ, "RUNBOOK_RUNBOOKS_DIR": str(ENGINE)}
    proc = subprocess.Popen([sys.executable, "-m", "app.stack", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_deployment_by_name("flaky-action/runbook")
                break
            except Exception:
                assert time.monotonic() < deadline, "the fixtures were not served"
                time.sleep(0.5)
    yield
    proc.terminate()
    proc.wait(20)


def test_retries_and_timeout_hold_when_the_flow_runs_from_a_deployment(flaky_server, served_fixtures):
    from flows.launch import start_incident

    run = start_incident("flaky-action", {"base_url": flaky_server}, drill=True)
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state.is_final():
                break
            assert time.monotonic() < deadline, f"served run did not finish: {state}"
            time.sleep(0.5)
        # this run's task runs only (the session's server holds thousands), once the server has filed them from events
        only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        while True:
            task_runs = {t.name: t for t in client.read_task_runs(flow_run_filter=only_this_run)}
            if task_runs.get("block-address") and task_runs["block-address"].run_count >= 3:
                break
            assert time.monotonic() < deadline + 30, f"task runs of the served run: {sorted(task_runs)}"
            time.sleep(0.5)
    assert state.is_completed(), state.message
    assert len(FlakyEndpoint.calls["/flaky"]) == 3, "two failures and one success"
    assert task_runs["block-address"].run_count == 3
    slow = FlakyEndpoint.calls["/slow"]
    assert len(slow) == 2, "one try and one retry"
    record = find_record(str(run.id))
    assert record.steps["slow-probe"]["status"] == "failed"
    assert "timed out" in record.steps["slow-probe"]["error"].lower() or "timeout" in record.steps["slow-probe"]["error"].lower()
    failed_at = record.entries("step.failed")[0].at
    started_at = next(e.at for e in record.journal if e.kind == "step.started" and e.step == "slow-probe")
    assert (failed_at - started_at).total_seconds() < 5, "each try is cut at the 1 s timeout, not the endpoint's 3 s"


def test_a_step_waiting_inside_a_parallel_track_is_answered_through_its_incident():
    """Pages carry the incident's run id; the answer must find the track (a child run) that waits."""
    from flows.catalog import FLOWS

    answers = {"check-diesel-pump": {"auto_started": True}, "check-header-pressure": {"header_pressure_mpa": 0.4, "normal": True},
               "open-series-valve": {"valve_open": True}, "confirm-phoned": {"reached": "dispatch"},
               "record-diesel-parameters": {"fuel_level_pct": 80, "header_pressures": "0.4"},
               "power-restored": {"restored_at": "2026-11-26T10:00:00Z"}, "restart-pumps": {"sequence": "1,2", "supply_normal": True},
               "final-record": {"cause": "grid"}}
    run = Background(FLOWS["pump-station-power-loss"], answers=answers, drill=True, time_scale=60)
    waiting = wait_for_step("close-butterfly-valves")
    with get_client(sync_client=True) as client:
        child = client.read_flow_run(UUID(waiting.flow_run_id))
    assert child.parent_task_run_id is not None, "the track waits in a child run"
    incident_id = next(p for p in pending_steps() if p.step == "close-butterfly-valves").flow_run_id
    root = run_root(incident_id)
    result = answer_step(root, by="wang-chief", values={"valves_closed": "1#, 2#"}, step="close-butterfly-valves")
    assert result.ok, result.message
    state = run.join()
    assert state.name == "Completed"
    record = find_record(str(state.state_details.flow_run_id))
    assert record.steps["close-butterfly-valves"]["valves_closed"] == "1#, 2#"


def run_root(flow_run_id: str) -> str:
    """The incident (top-level run) a child run belongs to."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        while run.parent_task_run_id is not None:
            run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    return str(run.id)


def test_a_site_limit_lookup_while_prefect_is_away_waits_for_it_rather_than_guessing(monkeypatch, slept):
    """A tag added on a guess made Prefect ask for a slot it could not give, and the incident failed (the outage drill)."""
    import contextlib

    import httpx
    from prefect.exceptions import ObjectNotFound

    from tasks import steps

    answers = [httpx.ConnectError("refused"), httpx.ConnectError("refused"), ObjectNotFound(http_exc=Exception())]

    class Client:
        def read_concurrency_limit_by_tag(self, tag):
            raise answers.pop(0)

    monkeypatch.setattr(steps, "sync_client", lambda: contextlib.nullcontext(Client()))
    assert steps.site_tags(f"away-{uuid.uuid4().hex[:6]}") == [], "no limit, once Prefect could say so"
    assert slept == [1.0, 2.0] and not answers


def test_an_action_waits_for_its_site_slot_while_prefect_is_away_and_acts_once(monkeypatch, slept):
    """A site with a limit: Prefect's engine asks for the slot before the step runs and, when it cannot be asked,
    raises ConcurrencySlotAcquisitionError; the step had not acted, so it asks again rather than fail the incident."""
    import contextlib

    import httpx
    import prefect.task_engine
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    from tasks import steps

    real = prefect.task_engine._concurrency
    refusals = [2]

    @contextlib.contextmanager
    def away_twice(names, **kwargs):
        if names and refusals[0]:
            refusals[0] -= 1
            raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names!r}") from httpx.ConnectError("refused")
        with real(names, **kwargs):
            yield

    monkeypatch.setattr(prefect.task_engine, "_concurrency", away_twice)
    acted: list[str] = []
    waiting = steps._WaitsForItsSlot(task(lambda step_id: acted.append(step_id) or {"ok": True}, name="open-valve",
                                          tags=["site:somewhere"], cache_policy=NO_CACHE))

    @flow
    def one_step():
        return waiting("open-valve")

    assert one_step() == {"ok": True}
    assert refusals == [0] and acted == ["open-valve"], "refused twice, then acted once"
    assert slept[:2] == [1.0, 2.0]


def test_a_run_looks_its_sites_limit_up_while_it_starts():
    """`site_limit_ahead` (flows/engine.py calls it as an incident with actions begins): the lookup runs beside the
    run's start, and the first action's `site_tags` finds its answer there instead of asking the server itself."""
    import time as clock

    from prefect.client.orchestration import get_client

    from tasks import steps

    site = f"limit-probe-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=f"site:{site}", concurrency_limit=2)
        try:
            steps.site_limit_ahead(site)
            deadline = clock.monotonic() + 30
            while site not in steps._site_limited and clock.monotonic() < deadline:
                clock.sleep(0.05)
            assert site in steps._site_limited, "the lookup beside the run's start did not answer within 30 s"
            looked_up = []
            real = steps._site_limit_exists
            steps._site_limit_exists = lambda tag: looked_up.append(tag) or real(tag)
            try:
                assert steps.site_tags(site) == [f"site:{site}"] and looked_up == [], "the answer was there already"
            finally:
                steps._site_limit_exists = real
        finally:
            client.delete_concurrency_limit_by_tag(f"site:{site}")
            steps._site_limited.pop(site, None)


def test_a_first_action_that_comes_while_the_sites_limit_is_looked_up_waits_for_that_answer():
    """The first action of a forked run often comes before the lookup begun with the run has its answer: it takes that
    answer rather than asking the server a second time (two asks an incident, measured on the served stack)."""
    import threading

    from tasks import steps

    site = f"limit-race-{uuid.uuid4().hex[:6]}"
    asked, answer = [], threading.Event()
    real = steps._site_limit_exists

    def slow_ask(tag: str) -> bool:
        asked.append(tag)
        answer.wait(5)
        return False

    steps._site_limit_exists = slow_ask
    try:
        steps.site_limit_ahead(site)
        steps.site_limit_ahead(site)  # asked again while on its way: still one lookup
        threading.Timer(0.2, answer.set).start()
        assert steps.site_tags(site) == [] and asked == [f"site:{site}"], asked
    finally:
        steps._site_limit_exists = real
        steps._site_limited.pop(site, None)


def test_action_steps_carry_the_site_tag_only_where_a_site_limit_exists():
    """The tag makes Prefect ask the server for a slot on every action; without a limit it is two calls for nothing."""
    from prefect.client.orchestration import get_client

    from tasks import steps

    site = f"limit-probe-{uuid.uuid4().hex[:6]}"
    assert steps.site_tags(site) == []
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=f"site:{site}", concurrency_limit=2)
        try:
            assert steps.site_tags(site) == [], "looked up at most every 30 s"
            steps._site_limited.pop(site)
            assert steps.site_tags(site) == [f"site:{site}"]
        finally:
            client.delete_concurrency_limit_by_tag(f"site:{site}")
