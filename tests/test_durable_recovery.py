"""An incident survives the machine that ran it: it goes on elsewhere, acting once.

Each "machine" is a `python -m app.stack serve` with a local storage path of its own
(PREFECT_LOCAL_STORAGE_PATH: the disk where Prefect would keep result files), killed with
SIGKILL together with its flow processes, so nothing writes a Crashed state. Two
escalation watchers run throughout, as `runbook up` and production have them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Crashed

from flows.answers import answer_step
from flows.launch import start_incident
from tasks.inputs import create_once, inputs_under, read_input, read_run_inputs
from tasks import records
from tasks.records import WRITER, _records_read, done_record, done_steps_in, step_records, write_handed
from tests.test_durable_time import FIXTURES, Endpoint, _start, flow_process, kinds, state_of, wait_until

HEARTBEAT = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}  # what the served stack and every worker set


@pytest.fixture(scope="module")
def watchers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("recovery")
    procs = [_start(["watcher", "1"], logs / f"watcher-{n}.log", RUNBOOK_RUNBOOKS_DIR=str(FIXTURES), **HEARTBEAT)
             for n in (1, 2)]
    yield logs
    for proc in procs:
        _stop(proc, signal.SIGTERM)


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.calls = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class Machine:
    """A worker machine: the fixture runbooks served, with a disk of its own."""

    def __init__(self, logs: Path, name: str, **env: str):
        began = datetime.now(timezone.utc)
        disk = logs / f"{name}-disk"
        self.proc = _start(["serve"], logs / f"{name}.log", RUNBOOK_RUNBOOKS_DIR=str(FIXTURES),
                           PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOCAL_STORAGE_PATH=str(disk), **HEARTBEAT, **env)
        self.log = logs / f"{name}.log"

        def serving() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with get_client(sync_client=True) as client:
                try:
                    return client.read_deployment_by_name("wait-kill/runbook").updated >= began
                except Exception:
                    return False

        wait_until(f"{name} to serve the runbooks", serving, 120)

    def die(self, *run_ids) -> None:
        """The machine goes: its runner, its forkserver and the incidents' flow processes, all at once, with no word to Prefect."""
        pids = [flow_process(run_id) for run_id in run_ids]
        _stop(self.proc, signal.SIGKILL)
        for pid in pids:
            try:
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@flow
def bare() -> None:
    pass


def test_a_step_record_is_an_input_of_the_incidents_run_and_only_a_json_one_is_read():
    """What a worker reads back decides whether a step acts again; a record that says pickle would run code."""
    records = step_records()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)
        json_record = b'{"metadata": {"serializer": {"type": "json"}, "storage_key": "k"}, "result": "{}"}'
        records.write_path(f"{run.id}:block-address", json_record)
        assert WRITER.flush(), "handed to the process's record writer, written before the process lets its run go"
        assert client.read_flow_run_input(run.id, "done-block-address") == json_record.decode()
        assert records.read_path(f"{run.id}:block-address") == json_record
        records.write_path(f"{run.id}:block-address", b"a second record")  # the first one stays
        WRITER.flush()
        assert records.read_path(f"{run.id}:block-address") == json_record
        client.create_flow_run_input(run.id, "done-page-chief", '{"metadata": {"serializer": {"type": "pickle"}}, "result": "gA=="}')
        for step in ("page-chief", "never-ran"):
            with pytest.raises(FileNotFoundError):
                records.read_path(f"{run.id}:{step}")
        # a later attempt reads every record at once: the JSON one is done (and kept), the pickle one is not
        assert done_steps_in(str(run.id), read_run_inputs(str(run.id))) == {"block-address"}


def test_records_handed_over_faster_than_the_server_takes_them_go_in_one_input_and_each_is_found():
    """Quick steps one after another: their records travel together (one request, not one a step), and each step's
    record is found as if it were on its own: by a later attempt's one read, by Prefect's cache lookup, by a wait."""
    records = step_records()
    record = '{{"metadata": {{"serializer": {{"type": "json"}}, "storage_key": "k"}}, "result": "{}"}}'
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)
        held = threading.Event()
        WRITER.later(lambda _client: held.wait(10))  # the server slow to answer: the records pile up meanwhile
        steps = [f"post-{n}" for n in range(5)]
        for n, step in enumerate(steps):
            WRITER.later(lambda c, path=f"{run.id}:{step}": write_handed(c, path) or create_once(c, run.id, f"began-{step}", "x"))
            records.write_path(f"{run.id}:{step}", record.format(n).encode())
        held.set()
        assert WRITER.flush()
        kept = inputs_under(client, run.id, "")
        assert [k for k in kept if k.startswith("done--")] and not [k for k in kept if k.startswith(("done-p", "began-"))], kept
        _records_read.clear()  # as a process of a later attempt finds them
        assert done_steps_in(str(run.id), read_run_inputs(str(run.id))) == set(steps)
        _records_read.clear()
        assert json.loads(records.read_path(f"{run.id}:post-3"))["result"] == "3"
        assert done_record(client, run.id, "post-4") is not None and done_record(client, run.id, "post-5") is None


def test_a_read_of_a_runs_inputs_takes_them_all_page_by_page_and_refuses_what_it_cannot_read_whole(monkeypatch):
    """The server gives a run's inputs oldest first, as many as asked: past INPUTS_READ_LIMIT the next request leaves
    out the keys already read, so the newest (a long incident's latest claims and answers) are not silently missing;
    past INPUTS_MOST the read refuses rather than give a part as the whole, and an attempt's first read says none."""
    from tasks import inputs

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)
        for n in range(7):
            assert create_once(client, run.id, f"once-x-{n}", str(n))
        assert create_once(client, run.id, "other", "o")
        monkeypatch.setattr(inputs, "INPUTS_READ_LIMIT", 3)
        assert inputs_under(client, run.id, "once-x-") == {f"once-x-{n}": str(n) for n in range(7)}
        assert set(read_run_inputs(str(run.id))) == {f"once-x-{n}" for n in range(7)} | {"other"}
        assert inputs_under(client, run.id, "once_x-") == {}  # the server's LIKE takes `_` for any character
        monkeypatch.setattr(inputs, "INPUTS_MOST", 7)  # just as many: read whole
        assert len(inputs_under(client, run.id, "once-x-")) == 7
        monkeypatch.setattr(inputs, "INPUTS_MOST", 6)
        with pytest.raises(inputs.TooManyInputs, match="more than 6 inputs under 'once-x-'"):
            inputs_under(client, run.id, "once-x-")
        assert read_run_inputs(str(run.id)) is None


def test_a_quick_step_has_its_done_record_written_in_its_began_marks_place_and_a_long_one_is_marked(monkeypatch):
    """In the attempt that started the incident, a step's began mark waits a moment for the step's done record
    (records.MARK_GRACE_SECONDS): a step done by then costs one write, its record; one still acting is marked then;
    and a flush (the process letting its run go) does not wait out the moment."""
    records_ = step_records()
    record = '{"metadata": {"serializer": {"type": "json"}, "storage_key": "k"}, "result": "{}"}'
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)

        def mark(step):
            return lambda c: create_once(c, run.id, f"began-{step}", "this task run")

        WRITER.mark_unless_done(f"{run.id}:quick", mark("quick"))
        time.sleep(0.05)  # the step acts
        records_.write_path(f"{run.id}:quick", record.encode())
        assert WRITER.flush()
        kept = inputs_under(client, run.id, "")
        assert "began-quick" not in kept and done_record(client, run.id, "quick") is not None, kept

        began = time.monotonic()
        WRITER.mark_unless_done(f"{run.id}:long", mark("long"))  # still acting when the moment is up
        wait_until("the long step's mark", lambda: read_input(client, run.id, "began-long") is not None, 10)
        assert time.monotonic() - began >= records.MARK_GRACE_SECONDS

        monkeypatch.setattr(records, "MARK_GRACE_SECONDS", 1.0)  # three steps begin together (parallel tracks):
        began = time.monotonic()                                # the writer waits out one moment, not three
        for track in range(3):
            WRITER.mark_unless_done(f"{run.id}:track-{track}", mark(f"track-{track}"))
        wait_until("the three tracks' marks", lambda: all(
            read_input(client, run.id, f"began-track-{t}") for t in range(3)), 10)
        assert time.monotonic() - began < 2.5

        monkeypatch.setattr(records, "MARK_GRACE_SECONDS", 60.0)
        began = time.monotonic()
        WRITER.mark_unless_done(f"{run.id}:suspends", mark("suspends"))
        assert WRITER.flush() and time.monotonic() - began < 10, "the flush cut the moment short"
        assert read_input(client, run.id, "began-suspends") == "this task run"


def test_a_batch_the_server_refused_leaves_the_other_records_to_their_own_jobs():
    """A batch lost is not several records lost: the others go back to wait for their own steps' jobs."""
    class OnceRefusing:  # the server answers the first batch 503 (after the client's own retries)
        def __init__(self):
            self.refused, self.written = False, {}

        def create_flow_run_input(self, flow_run_id, key, value):
            if not self.refused:
                self.refused = True
                raise RuntimeError("503 Service Unavailable")
            self.written[key] = json.loads(value)

    run_id, client = "0b8f7f0e-1d2c-4c56-9a8b-000000000001", OnceRefusing()
    records._handed.update({f"{run_id}:{step}": f'"{step}"' for step in ("one", "two", "three")})
    with pytest.raises(RuntimeError):
        write_handed(client, f"{run_id}:one")  # this one's record is lost, as a single record always was
    assert write_handed(client, f"{run_id}:two") and write_handed(client, f"{run_id}:three")
    assert list(client.written.values()) == [{"two": '"two"', "three": '"three"'}]
    assert not write_handed(client, f"{run_id}:one") and not records._handed and not records._batched


def test_a_flush_writes_the_last_records_itself_beside_the_writers_request_under_way():
    """The run lets go (its end, a suspended wait): the records still waiting go from the flush's own thread at once,
    not after the request the writer has under way; the steps' jobs then find them written (no began mark either)."""
    record = '{{"metadata": {{"serializer": {{"type": "json"}}, "storage_key": "k"}}, "result": "{}"}}'
    records_ = step_records()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)
        under_way, release = threading.Event(), threading.Event()
        WRITER.later(lambda _client: (under_way.set(), release.wait(20)))  # a request the server is slow to answer
        assert under_way.wait(10)
        for n, step in enumerate(("last-but-one", "last")):
            WRITER.later(lambda c, step=step: write_handed(c, f"{run.id}:{step}") or create_once(c, run.id, f"began-{step}", "x"))
            records_.write_path(f"{run.id}:{step}", record.format(n).encode())
        flushing = threading.Thread(target=WRITER.flush, kwargs={"run": str(run.id)})
        flushing.start()
        wait_until("the last records, while the writer's request is still under way",
                   lambda: {"last-but-one", "last"} <= set(records._records_in(inputs_under(client, run.id, "done-"))), 10)
        assert flushing.is_alive()  # it still waits for the writer's jobs
        release.set()
        flushing.join(10)
        assert not flushing.is_alive()
        kept = inputs_under(client, run.id, "")
        assert not [k for k in kept if k.startswith("began-")] and not records._handed and not records._batched, kept


def test_a_record_the_flush_is_writing_is_waited_for_and_one_it_could_not_write_goes_back_to_its_job():
    """While a flush's write of a record is under way, that record's job waits for it (it is not on the server yet);
    a write that fails hands the record back, and its own job writes it (with the settings it was handed under)."""
    under_way, answer = threading.Event(), threading.Event()

    class SlowThenRefusing:  # the flush's request: slow, then a 503 (after the client's own retries)
        def create_flow_run_input(self, flow_run_id, key, value):
            under_way.set()
            answer.wait(10)
            raise RuntimeError("503 Service Unavailable")

    record = '{"metadata": {"serializer": {"type": "json"}, "storage_key": "k"}, "result": "{}"}'
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(bare)
        path = f"{run.id}:refused"
        with records._handed_lock:
            records._handed[path] = record
        refused = []

        def flush_write():
            try:
                records.write_run_now(SlowThenRefusing(), str(run.id))
            except RuntimeError as exc:
                refused.append(exc)

        flushing = threading.Thread(target=flush_write)
        flushing.start()
        assert under_way.wait(10)
        job = []
        its_job = threading.Thread(target=lambda: job.append(write_handed(client, path)))
        its_job.start()
        time.sleep(0.3)
        assert its_job.is_alive() and not job  # it waits for the flush's write rather than take it as written
        answer.set()
        flushing.join(10)
        its_job.join(10)
        assert refused and job == [True] and done_record(client, run.id, "refused") == record
        assert not records._handed and not records._batched and not records._in_flight


def test_a_step_that_acts_while_prefect_is_away_waits_for_it_rather_than_failing(monkeypatch, slept):
    """The records block is read before a process's first acting step; a refused connection then is not the step's
    failure (CI saw an incident fail when its first step came as the server stopped)."""
    import httpx

    import tasks.records as records

    tries = []

    def load(api_url):
        tries.append(api_url)
        if len(tries) < 3:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return "the block"

    monkeypatch.setattr(records, "_step_records", load)
    assert records.step_records() == "the block"
    assert len(tries) == 3 and slept == [1.0, 2.0]

    monkeypatch.setattr(records, "_step_records", lambda api_url: (_ for _ in ()).throw(ValueError("a bad block")))
    with pytest.raises(ValueError):  # anything else is not Prefect being away: it fails as before
        records.step_records()


def test_incidents_that_start_together_on_a_new_server_all_find_the_records_block(monkeypatch, slept):
    """On a new server every first incident finds no block and saves it at once; a save that fails on what another
    is registering is tried again, not the step's failure (a burst on a new server failed one incident in five)."""
    import tasks.records as records

    calls = []

    def load(cls, name, *args, **kwargs):
        calls.append("load")
        if calls.count("load") < 3:  # the other process's block is not there yet
            raise ValueError(f"Unable to find block document named {name}")
        return "the other's block"

    def save(self, *args, **kwargs):
        calls.append("save")
        raise RuntimeError("409: the block schema is being registered by another process")

    # patched on the class itself, not a subclass: a subclass would take the block type's place in Prefect's registry
    monkeypatch.setattr(records.StepRecords, "load", classmethod(load))
    monkeypatch.setattr(records.StepRecords, "save", save)
    assert records._step_records.__wrapped__("http://the-server/api") == "the other's block"
    assert calls == ["load", "save", "load", "save", "load"] and slept == [0.1, 0.2]


def _input(run_id, key: str) -> str | None:
    with get_client(sync_client=True) as client:
        return read_input(client, UUID(str(run_id)), key)


def test_an_incident_recovered_on_another_disk_does_not_act_again(watchers, endpoint):
    """The first action's done record is kept on the Prefect server, not in a result file on the dead machine's disk."""
    first = Machine(watchers, "machine-a")
    second = None
    try:
        run = start_incident("wait-kill", {"base_url": endpoint})
        wait_until("the first action", lambda: Endpoint.calls == ["/first"], 60)
        wait_until("the wait after it", lambda: ("step.started", "hold") in kinds(run.id), 20)
        # its began mark is written by the process's record writer, beside the step: the death must come after it
        wait_until("the wait's began mark", lambda: _input(run.id, "began-hold") is not None, 20)
        first.die(run.id)
        with get_client(sync_client=True) as client:  # what a runner that saw its process die writes
            client.set_flow_run_state(UUID(str(run.id)), Crashed(message="its machine died"), force=True)
        second = Machine(watchers, "machine-b")
        final = wait_until("the incident to finish on machine b", lambda: (s := state_of(run.id)).is_final()
                           and s.name != "Crashed" and s, 120)
        assert final.is_completed(), final.message
    finally:
        first.stop()
        if second:
            second.stop()
    assert Endpoint.calls == ["/first", "/second"], "each action's endpoint got exactly one request"
    # the journal as the server's events have it: they arrive a moment after the run's final state
    journal = wait_until("the close in the journal", lambda: (j := kinds(run.id)) and ("incident.closed", None) in j and j, 30)
    assert ("incident.recovered", None) in journal, journal
    assert ("step.interrupted", "hold") in journal, "the wait it died in is said to run again"
    assert ("step.interrupted", "first-call") not in journal, journal
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(run.id))])))
    assert sorted(t.state.name for t in tasks if t.name == "first-call") == ["Cached", "Completed"], \
        "the recovered run found the first action Cached"


def test_an_incident_whose_machine_died_heals_within_a_minute_and_a_live_one_is_left_alone(watchers, endpoint):
    """No Crashed state is ever written: the run stays Running until its heartbeats are missed.

    The same for an incident waiting for a person inside its process (waits not suspended,
    RUNBOOK_SUSPEND_WAITS=false): it stays Paused until its heartbeats are missed.

    Meanwhile incidents alive on the other machine, one waiting for over a minute between two
    actions and one waiting for a person in its process, send their heartbeats and are never taken for dead.
    """
    blocking = {"RUNBOOK_SUSPEND_WAITS": "false"}
    first = Machine(watchers, "machine-c", **blocking)
    second = None
    try:
        run = start_incident("wait-kill", {"base_url": endpoint})
        held = start_incident("clock-drill", {})
        wait_until("the first action", lambda: Endpoint.calls == ["/first"], 60)
        wait_until("the wait after it", lambda: ("step.started", "hold") in kinds(run.id), 20)
        wait_until("the person's step to wait in its process", lambda: state_of(held.id).name == "Paused", 60)
        first.die(run.id, held.id)
        died = datetime.now(timezone.utc)
        time.sleep(2)
        assert state_of(run.id).name == "Running", "nothing told Prefect the run died"
        assert state_of(held.id).name == "Paused", "nothing told Prefect the run died"
        second = Machine(watchers, "machine-d", **blocking)
        live = start_incident("wait-kill", {"base_url": f"{endpoint}/live"}, time_scale=0.125)  # its wait: 64 s
        final = wait_until("the incident to finish on machine d", lambda: (s := state_of(run.id)).is_final()
                           and s.name != "Crashed" and s, 180)
        assert final.is_completed(), final.message
        assert wait_until("the live incident to finish", lambda: (s := state_of(live.id)).is_final() and s, 120).is_completed()
        # the waiting incident, healed, waits for its person again on machine d; alive there, it stays Paused past
        # the watcher's silence limit (50 s): its process sends heartbeats while it waits
        paused = wait_until("the healed incident to wait again on machine d", lambda: (s := state_of(held.id)).name == "Paused"
                            and s.timestamp > died and s, 120)
        time.sleep(max(0.0, 65 - (datetime.now(timezone.utc) - paused.timestamp).total_seconds()))
        assert state_of(held.id).name == "Paused", [s.name for s in _states(held.id)]
        assert answer_step(str(held.id), by="wang-chief", values={"restored": "yes"}).ok
        assert wait_until("the waiting incident to finish", lambda: (s := state_of(held.id)).is_final() and s, 60).is_completed()
    finally:
        first.stop()
        if second:
            second.stop()
    assert [c for c in Endpoint.calls if not c.startswith("/live")] == ["/first", "/second"], Endpoint.calls
    assert [c for c in Endpoint.calls if c.startswith("/live")] == ["/live/first", "/live/second"], Endpoint.calls
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(str(run.id)))
        live_states = [s.name for s in client.read_flow_run_states(UUID(str(live.id)))]
    recovering = next(s for s in states if s.name == "Recovering")
    assert (recovering.timestamp - died).total_seconds() < 60, "set going again within a minute of the machine's death"
    crashed = next(s for s in states if s.name == "Crashed")
    assert "heartbeat" in (crashed.message or ""), crashed.message
    journal = kinds(run.id)
    assert journal.count(("incident.recovered", None)) == 1, journal
    assert journal.count(("incident.started", None)) == 1
    assert not {"Crashed", "Recovering"} & set(live_states), f"a live incident was taken for dead: {live_states}"
    held_states = _states(held.id)
    assert [s.name for s in held_states].count("Crashed") == 1, [s.name for s in held_states]
    crashed = next(s for s in held_states if s.name == "Crashed")
    assert "while it waited in its process" in (crashed.message or ""), crashed.message
    assert (next(s for s in held_states if s.name == "Recovering").timestamp - died).total_seconds() < 60
    assert kinds(held.id).count(("incident.recovered", None)) == 1


def _states(run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_run_states(UUID(str(run_id)))
