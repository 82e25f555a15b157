"""Warm start (app/warm.py, app/worker.py): served and worker runs are forked from a warm parent, and still Prefect's.

On the session's Prefect server: `python -m app.stack serve` (what `runbook up` runs) and `runbook worker --pool P`
(what production runs), each over the fixture runbooks of tests/fixtures/warm. An incident acts, waits suspended for
a person, is answered through the API the UI and the CLI use, resumes in a new forked process and completes; a
warm run cancelled from the API stops. Every served drill of tests/runbooks runs on this warm path too.
"""

from __future__ import annotations

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

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from flows.answers import answer_step
from flows.launch import start_incident
from tests.alerts.procs import stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "warm"
POOL = f"warm-{uuid.uuid4().hex[:8]}"


class Endpoint(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Endpoint.calls.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def prefects_own_clients():
    """A RunbookWorker built here shares its TLS context with every Prefect client of the process: put them back."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    inits = {cls: cls.__init__ for cls in (PrefectClient, SyncPrefectClient)}
    yield
    for cls, init in inits.items():
        cls.__init__ = init


@pytest.fixture(scope="module")
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "RUNBOOK_RUNBOOKS_DIR": str(FIXTURES), **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _deployed(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except Exception:
            return False


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The fixture runbooks served warm, and a `runbook` worker on a pool with warm-drill deployed to it."""
    logs = tmp_path_factory.mktemp("warm")
    # warm-hold's 10-minute wait holds its process (a wait longer than this suspends instead): the run to cancel
    serve = _start([sys.executable, "-m", "app.stack", "serve"], logs / "serve.log", PREFECT_RUNNER_POLL_FREQUENCY="5",
                   RUNBOOK_SUSPEND_WAIT_AFTER="3600")
    # the worker polls seldom: what starts and resumes its runs at once is the server's events
    worker = _start([str(Path(sys.executable).parent / "runbook"), "worker", "--pool", POOL], logs / "worker.log",
                    PREFECT_WORKER_QUERY_SECONDS="15", RUNBOOK_SUSPEND_WAIT_AFTER="3600")
    deploy = ("from prefect.deployments.runner import EntrypointType\nfrom flows.catalog import FLOWS\n"
              "for name in ('warm-drill', 'warm-hold'):\n"
              f"    FLOWS[name].to_deployment(name='on-worker', work_pool_name='{POOL}',"
              " entrypoint_type=EntrypointType.MODULE_PATH).apply()")
    try:
        wait_for(lambda: _deployed("warm-drill/runbook") and _deployed("warm-hold/runbook"), 180,
                 "the fixture runbooks served", every=0.5)
        wait_for(lambda: worker.poll() is not None or _pool_exists(), 120, "the worker's pool", every=0.5)
        assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
        subprocess.run([sys.executable, "-c", deploy], cwd=ROOT, check=True, timeout=120,
                       env={**os.environ, "RUNBOOK_RUNBOOKS_DIR": str(FIXTURES)})
        yield {"serve": serve, "worker": worker, "logs": logs}
    finally:
        stop_process(worker)
        stop_process(serve)


def _pool_exists() -> bool:
    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(POOL).type == "runbook"
        except Exception:
            return False


def test_the_worker_holds_a_runs_next_attempt_until_its_last_one_has_ended(monkeypatch):
    """One executor context serves every run of the worker, its registrations by run id: a wait answered at once
    makes the next attempt scheduled while the last one's process is still ending. That attempt is left for the poll
    made when the last one has ended (app/warm.py listen_for_scheduled_runs's `busy`), as Prefect's Runner does."""
    import asyncio
    from types import SimpleNamespace

    from prefect.workers.process import ProcessWorker

    from app.worker import RunbookWorker

    handed: list = []

    async def prefects(self, response):
        handed.extend(entry.flow_run.id for entry in response)
        return []

    monkeypatch.setattr(ProcessWorker, "_submit_scheduled_flow_runs", prefects)

    async def scenario() -> None:
        worker = RunbookWorker(work_pool_name="p", name="w")
        ending, new = uuid.uuid4(), uuid.uuid4()
        worker._attempts.add(ending)
        entries = [SimpleNamespace(flow_run=SimpleNamespace(id=i)) for i in (ending, new)]
        await worker._submit_scheduled_flow_runs(entries)
        assert handed == [new]
        worker._attempts.discard(ending)
        await worker._submit_scheduled_flow_runs(entries)
        assert handed == [new, ending, new]

    asyncio.run(scenario())


def test_a_worker_whose_setup_fails_closes_its_executor_context(monkeypatch):
    """The shared executor context is entered before Prefect's setup: when that fails, Prefect's teardown closes it."""
    import asyncio

    from prefect.workers.process import ProcessWorker

    from app.worker import RunbookWorker

    async def fails(self):
        raise RuntimeError("the pool cannot be read")

    monkeypatch.setattr(ProcessWorker, "setup", fails)

    async def scenario() -> None:
        worker = RunbookWorker(work_pool_name="p", name="w")
        with pytest.raises(RuntimeError, match="the pool cannot be read"):
            await worker.setup()
        assert worker._executor is None and not worker._exit_stack._exit_callbacks, "nothing left open"

    asyncio.run(scenario())


def test_the_worker_gives_a_run_its_labels_once_and_reads_a_deployment_once_a_submission():
    """What a resume on the worker does not repeat: the labels a run carries already, the second deployment read of
    its submission (Prefect's worker reads it to check it exists, then to build the job), the flow's record."""
    import asyncio
    from types import SimpleNamespace

    from pydantic import BaseModel

    from app.worker import RunbookWorker, _ReadOnce

    calls: list[str] = []

    class Deployment(BaseModel):
        id: str
        job_variables: dict = {}

    class Client:
        async def update_flow_run_labels(self, run_id, labels):
            calls.append("labels")

        async def read_deployment(self, deployment_id):
            calls.append("deployment")
            return Deployment(id=deployment_id)

        async def read_flow(self, flow_id):
            calls.append("flow")
            return SimpleNamespace(id=flow_id)

    async def scenario() -> None:
        worker = RunbookWorker(work_pool_name="p", name="w")
        worker._client = client = Client()
        worker._work_pool = SimpleNamespace(name="p", id=uuid.uuid4())
        reads = _ReadOnce(client)
        new, resumed = uuid.uuid4(), uuid.uuid4()
        worker._submitting[new] = SimpleNamespace(labels={})
        worker._submitting[resumed] = SimpleNamespace(labels={
            "prefect.worker.name": "w", "prefect.worker.type": "runbook",
            "prefect.work-pool.name": "p", "prefect.work-pool.id": str(worker._work_pool.id)})
        await worker._give_worker_labels_to_flow_run(new)
        await worker._give_worker_labels_to_flow_run(resumed)
        assert calls == ["labels"], "only the run without them is labelled"
        calls.clear()
        for _ in range(2):  # two submissions of the same deployment and flow
            reads.fresh("d")
            first = await client.read_deployment("d")
            first.job_variables["env"] = {"A": "1"}  # as building a job does, in place
            assert (await client.read_deployment("d")).job_variables == {}, "each caller has its own copy"
            await client.read_flow("f")
        assert calls == ["deployment", "flow", "deployment"]

    asyncio.run(scenario())


def state_of(run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id))).state


def name_of(run_id) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id))).name


def process_of(run_id) -> int:
    """The run's process as its runner (`host:pid`) or worker (`pid`, as Prefect's workers record it) says."""
    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(UUID(str(run_id))).infrastructure_pid
    assert recorded and recorded.rpartition(":")[2].isdigit(), recorded
    return int(recorded.rpartition(":")[2])


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def is_forkserver(pid: int) -> bool:
    return b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()


def _act_wait_answer_complete(run_id, where: str) -> None:
    wait_for(lambda: "/first" in Endpoint.calls, 60, f"the first action ({where})", every=0.2)
    wait_for(lambda: state_of(run_id).name == "Suspended", 60, f"the wait to suspend ({where})", every=0.2)
    name = name_of(run_id)
    time.sleep(1.1)  # a name made of the time would change by now
    result = answer_step(str(run_id), by="wang-chief", values={})
    assert result.ok, result.message
    final = wait_for(lambda: (s := state_of(run_id)).is_final() and s, 90, f"the incident to finish ({where})", every=0.2)
    assert final.is_completed(), final.message
    assert name_of(run_id) == name, "the resumed attempt keeps the incident's name"
    assert Endpoint.calls == ["/first", "/second"], "each action once, across the fork that acted and the one that resumed"


def test_a_served_incident_is_forked_warm_waits_suspended_and_resumes_after_its_answer(parts, base_url):
    Endpoint.calls = []
    run = start_incident("warm-drill", {"base_url": base_url})
    wait_for(lambda: "/first" in Endpoint.calls, 60, "the first action", every=0.2)
    pid = process_of(run.id)
    if Path(f"/proc/{pid}").exists():  # still running: its parent is the forkserver the serve process started
        forkserver = parent_of(pid)
        assert is_forkserver(forkserver) and parent_of(forkserver) == parts["serve"].pid
    _act_wait_answer_complete(run.id, "served")


def test_the_runbook_worker_runs_an_incident_of_its_pool_warm_and_resumes_it(parts, base_url):
    Endpoint.calls = []
    run = run_deployment("warm-drill/on-worker", parameters={"parameters": {"base_url": base_url}}, timeout=0)
    _act_wait_answer_complete(run.id, "worker")
    log = (parts["logs"] / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    with get_client(sync_client=True) as client:
        labels = client.read_flow_run(run.id).labels
    assert labels.get("prefect.work-pool.name") == POOL and labels.get("prefect.worker.type") == "runbook", labels


@pytest.mark.parametrize("where", ["served", "worker"])
def test_a_warm_run_cancelled_from_the_api_stops(parts, base_url, where):
    """Served, the runner's own cancellation; on the worker, the one executor context it keeps for all its runs."""
    Endpoint.calls = []
    if where == "served":
        run = start_incident("warm-hold", {"base_url": base_url})
    else:
        run = run_deployment("warm-hold/on-worker", parameters={"parameters": {"base_url": base_url}}, timeout=0)
    wait_for(lambda: "/first" in Endpoint.calls, 60, "the first action", every=0.2)
    wait_for(lambda: state_of(run.id).is_running(), 30, "the run to hold", every=0.2)
    pid = process_of(run.id)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(message="cancelled by the test"))
    final = wait_for(lambda: (s := state_of(run.id)).is_final() and s, 60, "the run to stop", every=0.2)
    assert final.is_cancelled(), final
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or b"(Z)" in Path(f"/proc/{pid}/stat").read_bytes()
             or " Z " in Path(f"/proc/{pid}/stat").read_text(), 30, "its process to end", every=0.2)


class stream_of_one_event:
    """The server's event stream (`get_events_subscriber`) as the listener sees it: one run set Scheduled, then quiet."""

    def __init__(self, name: str, run_id: UUID, deployment: str):
        self.name, self.run_id, self.deployment = name, run_id, deployment

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def __aiter__(self):
        return self._events()

    async def _events(self):
        import anyio
        from prefect.events import Event

        yield Event(event=self.name, resource={"prefect.resource.id": f"prefect.flow-run.{self.run_id}"},
                    related=[{"prefect.resource.id": self.deployment, "prefect.resource.role": "deployment"}],
                    payload={"validated_state": {"type": "SCHEDULED"}})
        await anyio.sleep_forever()


def test_a_run_resumed_while_its_last_attempt_ends_is_polled_for_when_that_attempt_has_ended(monkeypatch):
    """Prefect's poll skips a run whose attempt it is still seeing through; the listener polls again once it ended."""
    import anyio

    import prefect.events.clients as clients
    from app.warm import listen_for_scheduled_runs

    run_id = UUID("6e1f2a3b-0000-4000-8000-000000000001")
    deployment = "prefect.deployment.5d0c7f2e-0000-4000-8000-000000000002"
    ending = {run_id}
    polls: list[set] = []

    # the server's event stream: the run was set Scheduled (an answer resumed it)
    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: stream_of_one_event("prefect.flow-run.Scheduled", run_id, deployment))

    async def poll() -> None:
        polls.append(set(ending))

    async def main() -> None:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(listen_for_scheduled_runs, lambda related: deployment in related, poll, lambda: False, 60.0,
                                 lambda: ending)
                while not polls:
                    await anyio.sleep(0.01)
                ending.clear()  # the suspended attempt's process has exited
                while len(polls) < 2:
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught, f"polls: {polls}"

    anyio.run(main)
    assert polls == [{run_id}, set()], "one poll when told (skipped by Prefect), one when the attempt had ended"


def test_a_runs_heartbeats_stop_the_moment_it_ends(monkeypatch):
    """Prefect's heartbeat thread sleeps in 1 s steps and is joined as a run ends; ours ends at once, after the
    same first heartbeat, so a suspended run's process lets it go without waiting for a sleeping thread."""
    import types

    import prefect.flow_engine as engine
    from app.warm import _heartbeats_that_stop_at_once

    monkeypatch.setattr(engine, "_send_heartbeats", engine._send_heartbeats)  # put Prefect's back after the test
    _heartbeats_that_stop_at_once()
    assert engine._send_heartbeats.stops_at_once
    sent = []
    run_engine = types.SimpleNamespace(
        heartbeat_seconds=30, flow_run=types.SimpleNamespace(state=None), logger=None,
        _build_heartbeat_event_template=lambda: ({"prefect.resource.id": "x"}, []),
        _emit_flow_run_heartbeat=lambda resource, related: sent.append(resource))
    with engine._send_heartbeats(run_engine):
        wait_for(lambda: sent, 5, "the first heartbeat", every=0.01)
    with engine._send_heartbeats(run_engine):
        wait_for(lambda: len(sent) == 2, 5, "the second run's first heartbeat", every=0.01)
        began = time.monotonic()
    assert time.monotonic() - began < 0.5, "the run's end waited for the heartbeat thread's sleep"
    assert len(sent) == 2, "one heartbeat as each run began, none after"


def test_a_stack_run_rebuilds_no_settings():
    """A forked run rebuilds Prefect's settings (0.1-0.2 s) only when its environment changes one; the one the
    runner hands each run (what EngineCommandStarter would give `python -m prefect.engine`) changes none."""
    from app.warm import WarmStarter, _changed_settings, forkserver_settings
    from prefect.client.schemas.objects import FlowRun

    forkserver_settings.cache_clear()
    env, _ = WarmStarter(context=None, deployment_name="x/runbook", heartbeat_seconds=None)._environment(
        FlowRun(flow_id=uuid.uuid4(), name="r"))
    assert "PREFECT__FLOW_RUN_ID" in env
    try:
        assert _changed_settings(env) == set()
    finally:
        forkserver_settings.cache_clear()


def test_a_run_told_of_before_the_server_shows_it_is_polled_for_again_at_once(monkeypatch):
    """The server may send a run's Scheduled event before the request that set it has committed: the poll it
    causes finds nothing. Without another event, the listener polls again a few moments later (as many times as
    LOOK_AGAIN_SECONDS says), not a second later."""
    import anyio

    import prefect.events.clients as clients
    from app.warm import LOOK_AGAIN_SECONDS, listen_for_scheduled_runs

    deployment = "prefect.deployment.5d0c7f2e-0000-4000-8000-000000000003"
    polls: list[float] = []

    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: stream_of_one_event("prefect.flow-run.Resuming", uuid.uuid4(), deployment))

    async def poll() -> None:
        polls.append(time.monotonic())

    async def main() -> None:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(listen_for_scheduled_runs, lambda related: deployment in related, poll, lambda: False, 60.0)
                while len(polls) < 1 + len(LOOK_AGAIN_SECONDS):
                    await anyio.sleep(0.01)
                await anyio.sleep(3 * max(LOOK_AGAIN_SECONDS))
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught, f"polls: {polls}"

    anyio.run(main)
    assert len(polls) == 1 + len(LOOK_AGAIN_SECONDS), "one poll when told, the looks again, no more without another event"
    assert polls[-1] - polls[0] < 1.0, "within a moment, not the regular poll's second"


def test_a_run_the_first_poll_took_is_not_polled_for_again(monkeypatch):
    """A poll takes the server's write lock: once the run told of is in hand (its poll found it), no look again."""
    import anyio

    import prefect.events.clients as clients
    from app.warm import LOOK_AGAIN_SECONDS, listen_for_scheduled_runs

    run_id = uuid.uuid4()
    deployment = "prefect.deployment.5d0c7f2e-0000-4000-8000-000000000004"
    taken: set = set()
    polls: list[float] = []

    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: stream_of_one_event("prefect.flow-run.Scheduled", run_id, deployment))

    async def poll() -> None:
        polls.append(time.monotonic())
        taken.add(run_id)  # the poll found it and submitted it

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: listen_for_scheduled_runs(lambda related: deployment in related, poll, lambda: False,
                                                               60.0, taken=lambda: taken))
            await anyio.sleep(0.5 + 3 * max(LOOK_AGAIN_SECONDS))
            group.cancel_scope.cancel()

    anyio.run(main)
    assert len(polls) == 1, f"one poll when told, none after it found the run: {polls}"


def _listen(monkeypatch, run_id: UUID, poll, seconds: float, while_listening=None, **kwargs) -> None:
    """Run the listener for `seconds`, told once that run_id is scheduled; `while_listening` runs beside it."""
    import anyio

    import prefect.events.clients as clients
    from app.warm import listen_for_scheduled_runs

    deployment = "prefect.deployment.5d0c7f2e-0000-4000-8000-000000000005"
    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: stream_of_one_event("prefect.flow-run.Scheduled", run_id, deployment))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: listen_for_scheduled_runs(lambda related: deployment in related, poll, lambda: False,
                                                               60.0, **kwargs))
            if while_listening is not None:
                group.start_soon(while_listening)
            await anyio.sleep(seconds)
            group.cancel_scope.cancel()

    anyio.run(main)


def test_a_run_no_poll_has_taken_yet_is_looked_for_until_one_does(monkeypatch):
    run_id, taken, polls = uuid.uuid4(), set(), []

    async def poll() -> None:
        polls.append(time.monotonic())
        if len(polls) == 2:
            taken.add(run_id)  # the first poll came before the commit; the look again finds it

    _listen(monkeypatch, run_id, poll, 1.0, taken=lambda: taken)
    assert len(polls) == 2, polls


def test_a_run_resumed_while_its_attempt_ends_is_looked_for_again_after_that_attempt(monkeypatch):
    """Told while its last attempt still ends (in hand, so no look again then); once it has ended, polled for at
    once, and looked for again if that poll came before the answer's commit."""
    import anyio

    run_id, polls = uuid.uuid4(), []
    ending, submitted = {run_id}, set()

    async def poll() -> None:
        polls.append(set(ending))
        if len(polls) == 3:
            submitted.add(run_id)

    async def attempt_ends() -> None:
        while not polls:
            await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # no look again meanwhile: the run is in hand
        assert len(polls) == 1, polls
        ending.clear()

    _listen(monkeypatch, run_id, poll, 1.5, attempt_ends, busy=lambda: ending, taken=lambda: ending | submitted)
    assert polls == [{run_id}, set(), set()], "when told; when the attempt ended; once more, which took it"


def test_the_prefect_clients_of_a_warm_process_share_one_tls_context(monkeypatch):
    """Prefect builds a TLS context (the whole CA bundle, 35-90 ms on two cores) for each client it makes; in a warm
    process (forkserver, runs, runner, worker) they share the one tasks/client.py builds, and a caller's own stays."""
    import ssl

    from prefect.client.orchestration import PrefectClient, SyncPrefectClient
    from prefect.settings import PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    from tasks import client as clients

    for cls in (PrefectClient, SyncPrefectClient):  # Prefect's own, whatever was built before this test
        monkeypatch.setattr(cls, "__init__", getattr(cls.__init__, "__wrapped__", cls.__init__))
    shared = clients.shared_tls_context()
    built: list[int] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: built.append(1) or real(*a, **k))
    get_client()
    assert len(built) == 1, "Prefect's own: a context per client"

    clients.share_tls_with_prefect_clients()
    clients.share_tls_with_prefect_clients()  # wrapped once
    made = [get_client(sync_client=True), get_client(sync_client=True), get_client(), get_client()]
    assert len(built) == 1, "no context built for the shared clients"
    assert all(c._client._transport._pool._ssl_context is shared for c in made)
    own = real()
    assert get_client(sync_client=True, httpx_settings={"verify": own})._client._transport._pool._ssl_context is own
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):  # a run's own settings are followed
        insecure = get_client()._client._transport._pool._ssl_context
    assert insecure is not shared and insecure.verify_mode == ssl.CERT_NONE


def test_the_start_gate_lets_a_few_runs_start_at_once_and_never_holds_one_long():
    """A run leaves the gate when its process ends, or `seconds` after its fork if it is still going."""
    import multiprocessing

    import anyio

    from app.warm import StartGate

    gate, fork = StartGate(runs=2, seconds=1.0), multiprocessing.get_context("fork")
    entered: dict[str, float] = {}

    async def start(name: str, seconds: float) -> None:
        run_id = uuid.uuid4()
        await gate.enter(run_id)
        await gate.enter(run_id)  # entered already (the runner's run, at its fork): keeps its one slot
        entered[name] = time.monotonic()
        process = fork.Process(target=time.sleep, args=(seconds,))
        process.start()
        await gate.leave_once_started(run_id, process, time.monotonic())
        gate.leave(run_id)  # left already: gives nothing back twice
        await anyio.to_thread.run_sync(process.join)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(start, "long", 3.0)
            group.start_soon(start, "short", 0.2)
            await anyio.sleep(0.1)
            group.start_soon(start, "after the short one", 3.0)
            await anyio.sleep(0.1)
            group.start_soon(start, "after the long one's seconds", 0.2)

    anyio.run(main)
    first = min(entered["long"], entered["short"])
    at = {name: round(t - first, 2) for name, t in entered.items()}
    assert max(at["long"], at["short"]) < 0.5, at
    assert 0.15 <= at["after the short one"] < 0.9, at
    assert 0.9 <= at["after the long one's seconds"] < 2.5, at


def test_the_runner_does_not_poll_while_the_start_gates_queue_is_full_and_polls_once_it_is_shorter():
    """Runs waiting at the gate are still Scheduled: a poll would bring them all back from the server (a burst's
    busiest work there) and a run it found would only wait behind them. The moment the queue is shorter, a poll goes."""
    import types

    import anyio

    from app.warm import StartGate, WarmRunner

    gate = StartGate(runs=2, seconds=1.0)
    polls: list[int] = []
    poller = types.SimpleNamespace(last_polled=None)

    async def poll(task_group=None) -> None:
        polls.append(gate.waiting)

    async def main() -> None:
        inside = [uuid.uuid4(), uuid.uuid4()]
        async with anyio.create_task_group() as group:
            runner = types.SimpleNamespace(_scheduled_run_poller=poller, _start_gate=gate, _runs_task_group=group,
                                           stopping=False)
            get_and_submit = WarmRunner._unless_the_gate_is_queued(runner, poll)
            for run_id in inside:
                await gate.enter(run_id)
            await get_and_submit()  # two inside, none waiting: polls
            for _ in range(2):
                group.start_soon(gate.enter, uuid.uuid4())
            await anyio.sleep(0.05)
            assert gate.waiting == 2 and gate.queue_full()
            await get_and_submit(task_group=group)  # two waiting for the two slots: no poll, counted as polled
            assert poller.last_polled is not None and polls == [0]
            gate.leave(inside[0])  # one of the waiting gets in: the queue is shorter, and a poll goes at once
            await anyio.sleep(0.05)
            assert polls == [0, 1]
            gate.leave(inside[1])  # shorter again, but no poll was skipped since: none more
            await anyio.sleep(0.05)
            group.cancel_scope.cancel()

    anyio.run(main)
    assert polls == [0, 1] and gate.waiting == 0


def test_a_warm_runners_polls_and_submissions_go_through_its_start_gate():
    """The wrappers are on the poller whose methods Prefect's own poll loop and the listener call (a Prefect upgrade
    that moved them would leave the gate unused, or bring every waiting run back at each poll)."""
    import anyio

    from app.warm import WarmRunner

    async def main() -> None:
        runner = WarmRunner(limit=None)
        async with runner:
            poller = runner._scheduled_run_poller
            assert poller._get_and_submit_flow_runs.__qualname__.startswith("WarmRunner._unless_the_gate_is_queued")
            assert poller._submit_run.__qualname__.startswith("WarmRunner._through_the_gate")
            assert runner._start_gate.on_room is not None
            await runner._get_and_submit_flow_runs()  # the runner's own poll goes through them (no deployment: no run)
            assert poller.last_polled is not None

    anyio.run(main)
