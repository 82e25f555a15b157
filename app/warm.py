"""Warm start: a flow run begins in a process forked from one that has already imported everything.

Prefect starts each flow run in a fresh interpreter (`python -m prefect.engine`, or a `spawn`
process for flows held in memory). That interpreter imports Prefect, the engine and every
runbook again: 1-2 s on two cores before the first line of the plan runs, paid again at every
resume of a suspended wait. Here a `multiprocessing` forkserver imports them once; each run is
a fork of it (about 0.1 s) that does exactly what `python -m prefect.engine` does: read the
run, load its flow through its deployment (an import already done), run it. States, logs,
cancellation (the runner's control channel and SIGTERM), heartbeats and crash detection stay
Prefect's: the runner and the worker watch the forked process as they watch their own.

The forkserver is a fresh interpreter of its own that runs no threads and no event loop
(forking a process that does is unsafe): the runner's and worker's threads are never forked.

Being told instead of polling: a runner polls for scheduled runs every second. `WarmRunner`
also listens to the server's event stream and polls at once when a run of its deployments is
scheduled (a new incident, or a suspended one resumed by an answer). The poll stays as the
fallback, so a lost event only costs the old latency.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from uuid import UUID

import anyio
import anyio.abc

from prefect.runner import Runner
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.types._datetime import now

from tasks.client import share_tls_with_prefect_clients

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner._control_channel import ControlChannel

logger = logging.getLogger("runbook.warm")

# What the forkserver imports once: the engine and what it loads a flow run with, and every runbook's flow.
PRELOAD = ["prefect.engine", "prefect.flow_engine", "prefect.client.orchestration", "prefect.deployments.runner",
           "app.warm_up"]

_context: multiprocessing.context.ForkServerContext | None = None


def forkserver(preload: list[str] | None = None) -> multiprocessing.context.ForkServerContext:
    """The forkserver every warm run is forked from, started now (its imports take a second or two, once)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(preload or PRELOAD)
        multiprocessing.forkserver.ensure_running()
    return _context


def run_flow_run(flow_run: "FlowRun", flow_name: str | None, env: dict[str, str], cwd: str | None) -> None:
    """In the forked child: what `python -m prefect.engine` does for one flow run, minus the imports.

    The runner or worker hands over the run it read and the name of its flow (a runbook of the
    preloaded catalog), which saves reading both again.
    """
    from prefect._internal.control_listener import configure_from_env
    from prefect.context import SettingsContext, get_settings_context
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow, run_flow
    from prefect.settings import Settings

    changed = _changed_settings(env)
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    from runbooks.settings import get_settings  # read by the forkserver: this run's environment and folder may differ

    get_settings.cache_clear()
    run_id = flow_run.id
    configure_from_env()
    _observe_suspension_in_the_background()
    _heartbeats_that_stop_at_once()
    # Prefect read its settings when the forkserver imported it; rebuilding them (0.2 s) is only
    # needed when this run's environment changes one
    settings = Settings() if changed else get_settings_context().settings
    with SettingsContext(profile=get_settings_context().profile, settings=settings):
        with handle_engine_signals(run_id):
            run_logger = flow_run_logger(flow_run=flow_run)
            try:
                flow = _catalog_flow(flow_name) or load_flow(flow_run)
            except Exception:
                run_logger.error("Unexpected exception encountered when trying to load flow", exc_info=True)
                raise
            _drive_run_flow_result(flow, run_flow(flow, flow_run=flow_run, error_logger=run_logger))


def _observe_suspension_in_the_background() -> None:
    """Let the flow start while Prefect opens its watch for a Suspend request from the UI.

    Prefect's engine holds a deployment run until its suspension observer has subscribed to the
    server's events (0.3-0.4 s on two cores), at every start and every resume. Here Prefect's own
    observer runs the same, in a thread of its own, and the run goes on meanwhile: a Suspend
    pressed in that first half second is seen when the subscription is up, a moment later.
    """
    import contextlib
    import contextvars
    import threading

    import prefect.flow_engine as engine

    original = getattr(engine, "observe_flow_run_suspension", None)
    if original is None or getattr(original, "in_background", False):
        return

    @contextlib.contextmanager
    def observe(flow_run_id, suspension_request, *args, **kwargs):
        done = threading.Event()

        def hold() -> None:
            with original(flow_run_id, suspension_request, *args, **kwargs):
                done.wait()

        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(hold,), daemon=True, name="suspension-observer")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=2)

    observe.in_background = True
    engine.observe_flow_run_suspension = observe


def _heartbeats_that_stop_at_once() -> None:
    """Prefect's flow-run heartbeats, with a thread that stops the moment the run ends.

    Prefect's heartbeat thread sleeps in 1 s steps and the engine joins it as the run ends, so
    every run (and every suspension of a wait) ends up to a second late, 0.5 s on average: an
    answer given at once waits for that before its run can start again. Here the thread waits on
    an event instead of sleeping; what it sends, and when, is Prefect's.
    """
    import contextlib
    import contextvars
    import threading

    import prefect.flow_engine as engine

    original = getattr(engine, "_send_heartbeats", None)
    base = getattr(engine, "BaseFlowRunEngine", None)
    if original is None or getattr(original, "stops_at_once", False) or not hasattr(engine, "MINIMUM_HEARTBEAT_INTERVAL") \
            or not all(hasattr(base, name) for name in ("_build_heartbeat_event_template", "_emit_flow_run_heartbeat")):
        return  # another Prefect: its own heartbeats, as they are

    @contextlib.contextmanager
    def send_heartbeats(run_engine, join_on_exit: bool = True, *args, **kwargs):
        seconds = run_engine.heartbeat_seconds
        if seconds is None:
            yield
            return
        seconds = max(seconds, engine.MINIMUM_HEARTBEAT_INTERVAL)
        resource, related = run_engine._build_heartbeat_event_template()
        stop = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                state = run_engine.flow_run.state if run_engine.flow_run else None
                if state is not None and state.is_final():
                    return
                try:
                    run_engine._emit_flow_run_heartbeat(resource, related)
                except Exception:  # noqa: BLE001  (as Prefect: a missed heartbeat is logged at debug)
                    run_engine.logger.debug("Failed to emit heartbeat", exc_info=True)
                stop.wait(seconds)

        thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            if join_on_exit:
                thread.join(timeout=2)

    send_heartbeats.stops_at_once = True
    engine._send_heartbeats = send_heartbeats


# settings of the server and the worker: a run's environment may carry them, they change nothing in the run
_NOT_THE_RUNS = ("PREFECT_SERVER_", "PREFECT_WORKER_")


_last_environment: list[tuple[Any, dict[str, str]]] = []  # the settings object last asked for, and its environment


def settings_environment() -> dict[str, str]:
    """The current Prefect settings as environment variables, as Prefect's starters and workers give them to each run
    (`to_environment_variables(exclude_unset=True)`), computed again only when the settings object is another than
    the last one asked for. Prefect computes them at every start and every resume: 30-80 ms of the runner's or
    worker's event loop on two cores, for a value that changes only with the settings."""
    settings = get_current_settings()
    entry = _last_environment[0] if _last_environment else None
    if entry is None or entry[0] is not settings:
        entry = (settings, settings.to_environment_variables(exclude_unset=True))
        _last_environment[:] = [entry]
    return dict(entry[1])


@functools.cache
def forkserver_settings() -> dict[str, str]:
    """The forkserver's Prefect settings as environment variables: computed once, by app/warm_up.py before any
    fork, so that each run only compares its environment with them."""
    return settings_environment()


def _changed_settings(env: dict[str, str]) -> set[str]:
    """The Prefect settings this run's environment gives another value than the forkserver's."""
    current = forkserver_settings()
    return {k for k, v in env.items()
            if k.startswith("PREFECT_") and not k.startswith(("PREFECT__",) + _NOT_THE_RUNS)
            and current.get(k, os.environ.get(k)) != v}


def _catalog_flow(name: str | None):
    """The runbook's flow from the preloaded catalog, or None to load it through the deployment as Prefect does."""
    if not name:
        return None
    from flows.catalog import FLOWS  # preloaded by the forkserver: a dictionary lookup

    return FLOWS.get(name)


START_GATE_RUNS = 3 * (os.cpu_count() or 2)  # starting at once: about three a core (bench quick's burst, two cores)
START_GATE_SECONDS = 5.0


class StartGate:
    """At most `runs` runs of one runner or worker starting at once; the forks of the others wait their turn.

    Forked all at once, a burst of incidents shares two cores and SQLite's write lock among hundreds of processes:
    each gets so little that all reach their first wait later than if they had come a few at a time, and each holds
    its memory meanwhile (200 at once on two cores: 39 waiting after 90 s and 2.9 GB at the peak ungated; 91 and
    1.2 GB through a gate of 6 and 5 s; docs/BENCHMARKS.md). A run leaves the gate when its process ends (its first
    wait suspends it) or `seconds` after its fork (a long first step, a wait inside a parallel step), so it never
    holds another run's start for longer; one incident alone never waits at it."""

    def __init__(self, runs: int = START_GATE_RUNS, seconds: float = START_GATE_SECONDS) -> None:
        self.runs, self.seconds = runs, seconds
        self._slots: anyio.Semaphore | None = None  # made in the event loop that uses it
        self._inside: set[UUID] = set()
        self.waiting = 0  # runs waiting for a slot
        self.last_entered = time.monotonic()  # when a run last got a slot
        self.on_room: Callable[[], None] | None = None  # called when a full queue gets shorter (WarmRunner polls then)

    def queue_full(self) -> bool:
        """Whether as many runs wait for a slot as the gate lets through at once: a run found now would wait behind
        them for a turn or more."""
        return self.waiting >= self.runs

    def moving(self) -> bool:
        """Whether a run got a slot lately (within twice `seconds`: a slot is given back at most `seconds` after its
        run's fork); a gate whose queue is full and not moving is stuck."""
        return time.monotonic() - self.last_entered < 2 * self.seconds

    async def enter(self, run_id: UUID) -> None:
        """Wait for a slot for the run; a run already inside keeps its one."""
        if run_id in self._inside:
            return
        if self._slots is None:
            self._slots = anyio.Semaphore(self.runs)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            was_full = self.queue_full()
            self.waiting -= 1
        self._inside.add(run_id)
        self.last_entered = time.monotonic()
        if was_full and not self.queue_full() and self.on_room is not None:
            self.on_room()

    def leave(self, run_id: UUID) -> None:
        """Give the run's slot back (nothing if it has none)."""
        if run_id in self._inside:
            self._inside.discard(run_id)
            self._slots.release()

    async def leave_once_started(self, run_id: UUID, process: multiprocessing.process.BaseProcess,
                                 forked_at: float) -> None:
        """Leave when the process ends or `seconds` after its fork, whichever comes first."""
        try:
            left = self.seconds - (time.monotonic() - forked_at)
            if left > 0:
                await anyio.to_thread.run_sync(multiprocessing.connection.wait, [process.sentinel], left,
                                               limiter=anyio.CapacityLimiter(1))
        finally:
            self.leave(run_id)


class WarmStarter:
    """A Prefect process starter (the runner's and the worker's seam) that forks the warm server instead of spawning."""

    def __init__(self, *, context: multiprocessing.context.ForkServerContext, deployment_name: str | None = None,
                 heartbeat_seconds: int | None = None, control_channel: "ControlChannel | None" = None,
                 env: dict[str, str | None] | None = None, cwd: Path | str | None = None,
                 flow_name: str | None = None, record_pid: bool = True, gate: StartGate | None = None) -> None:
        self._context = context
        self._gate = gate
        self._record_pid = record_pid
        self._flow_name = flow_name
        self._deployment_name = deployment_name
        self._heartbeat_seconds = heartbeat_seconds
        self._control_channel = control_channel
        self._env = env or {}
        self._cwd = cwd

    def _environment(self, flow_run: "FlowRun") -> tuple[dict[str, str], bool]:
        """What `python -m prefect.engine` would be started with, as EngineCommandStarter builds it."""
        # the job's own environment (a work pool's `env` job variable) wins over the worker's settings, as in Prefect
        env: dict[str, Any] = {**settings_environment(), **self._env}
        env.update({"PREFECT__FLOW_RUN_ID": str(flow_run.id), "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false"})
        # No PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED=false here: the forkserver asked the server's version once
        # (app/warm_up.py) and every fork inherits that answer; a setting the forkserver lacks would make each run
        # rebuild its settings (0.1 s) on the way to its first step.
        if self._deployment_name:
            env["PREFECT__DEPLOYMENT_NAME"] = self._deployment_name
        if self._heartbeat_seconds is not None:
            env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(int(self._heartbeat_seconds))
        registered = False
        if self._control_channel is not None:
            try:
                port, token = self._control_channel.register(flow_run.id)
                env["PREFECT__CONTROL_PORT"], env["PREFECT__CONTROL_TOKEN"] = str(port), token
                registered = True
            except RuntimeError:  # no loopback listener: cancellation falls back to kill, as in Prefect
                pass
        return {k: str(v) for k, v in env.items() if v is not None}, registered

    async def start(self, flow_run: "FlowRun",
                    task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED) -> None:
        gate = self._gate
        if gate is not None:
            await gate.enter(flow_run.id)  # the runner's runs have entered already, while still Scheduled
        handed_off = registered = False
        try:
            env, registered = self._environment(flow_run)
            process = self._context.Process(target=run_flow_run, name=f"flow-run-{flow_run.id}",
                                            args=(flow_run, self._flow_name, env, str(self._cwd) if self._cwd else None))
            # a limiter of its own each: anyio's shared one (40 threads) would cap the runs alive at once
            await anyio.to_thread.run_sync(process.start, limiter=anyio.CapacityLimiter(1))
            forked_at = time.monotonic()
            task_status.started(ProcessHandle(process))
            handed_off = True
            if self._record_pid:  # a worker records it itself
                await _record_pid(flow_run, process.pid)
            if gate is not None:
                await gate.leave_once_started(flow_run.id, process, forked_at)
            await anyio.to_thread.run_sync(process.join, limiter=anyio.CapacityLimiter(1))
        except BaseException:
            if gate is not None:
                gate.leave(flow_run.id)
            if registered and not handed_off and self._control_channel is not None:
                self._control_channel.unregister(flow_run.id)
            raise


async def _record_pid(flow_run: "FlowRun", pid: int | None) -> None:
    """Say on the run which process runs it (`host:pid`, as Prefect's workers do): a forked process's
    environment does not show its run id, so this is how an operator finds it."""
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            await client.update_flow_run(flow_run.id, infrastructure_pid=f"{socket.gethostname()}:{pid}")
    except Exception as exc:  # noqa: BLE001  (the run goes on; only the pointer to its process is missing)
        logger.warning("could not record the process of flow run %s: %s", flow_run.id, exc)


class WarmRunner(Runner):
    """Prefect's Runner, starting its runs warm and told about new ones by the server's events."""

    def __init__(self, *args: Any, preload: list[str] | None = None, **kwargs: Any) -> None:
        share_tls_with_prefect_clients()  # the runner's clients (its polls, each run's pid record) build no TLS context each
        self._forkserver = forkserver(preload)  # a fresh interpreter of its own: it imports while the runner starts
        self._flow_names: dict[UUID, str] = {}
        self._start_gate = StartGate()
        super().__init__(*args, **kwargs)

    def add_catalog_deployment(self, deployment: "RunnerDeployment") -> UUID:
        """Serve a deployment of a flow of flows/catalog.py, its runs started from the preloaded flow."""
        deployment_id = self.add_deployment(deployment)
        self._flow_names[deployment_id] = deployment.flow_name
        return deployment_id

    async def __aenter__(self):
        await super().__aenter__()
        poller = self._scheduled_run_poller

        def starter(flow_run: "FlowRun") -> WarmStarter:
            name = self._deployment_registry.get_deployment_name(flow_run.deployment_id) if flow_run.deployment_id else None
            return WarmStarter(context=self._forkserver, deployment_name=name, heartbeat_seconds=self._heartbeat_seconds,
                               control_channel=self._control_channel, flow_name=self._flow_names.get(flow_run.deployment_id),
                               gate=self._start_gate)

        poller._resolve_starter = starter
        poller._submit_run = self._through_the_gate(poller._submit_run)
        poller._get_and_submit_flow_runs = self._unless_the_gate_is_queued(poller._get_and_submit_flow_runs)
        scope = anyio.CancelScope()

        async def listen() -> None:
            with scope:
                await listen_for_scheduled_runs(deployments_of(self), self._get_and_submit_flow_runs,
                                                lambda: self.stopping, self.query_seconds,
                                                busy=lambda: poller._submitting_flow_run_ids,
                                                taken=lambda: poller._submitting_flow_run_ids)

        self._runs_task_group.start_soon(listen)
        self._exit_stack.callback(scope.cancel)  # stops listening before the runs' task group is awaited
        return self

    def _through_the_gate(self, submit: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Prefect's submission of a run, once the run has its turn at the start gate. It waits while still
        Scheduled: cancelled meanwhile, its Pending is refused and it never forks; a runner stopping meanwhile
        leaves it to the next poller. Prefect's own limit slot and submitting mark are given back as Prefect's
        submission gives them back."""
        poller, gate = self._scheduled_run_poller, self._start_gate

        async def submit_run(flow_run: "FlowRun", task_group: anyio.abc.TaskGroup, slot_token: UUID) -> None:
            def give_back() -> None:  # what Prefect's submission does as it ends
                poller._limit_manager.release(slot_token)
                poller._submitting_flow_run_ids.discard(flow_run.id)

            try:
                await gate.enter(flow_run.id)
            except BaseException:
                give_back()
                raise
            try:
                if self.stopping:
                    give_back()
                    return
                await submit(flow_run, task_group, slot_token)
            finally:
                gate.leave(flow_run.id)

        return submit_run

    def _unless_the_gate_is_queued(self, poll: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Prefect's poll for scheduled runs, skipped while the start gate's queue is full (`StartGate.queue_full`).

        The runs waiting at the gate are still Scheduled, so every poll would read, check and send all of them again:
        in a burst of 200 incidents that was the server's busiest work (half of its request handling, a poll a second
        and one each time it told of a run), taken from the runs it was starting. A run a skipped poll would have
        found waits on the server instead of behind the queue: once the queue is shorter, a poll goes at once and
        takes it, oldest first. A skipped poll counts as polled (the runner's health) while the gate is moving: the
        runner is not stuck, it has enough to start."""
        poller, gate = self._scheduled_run_poller, self._start_gate
        skipped = False

        def room() -> None:
            nonlocal skipped
            if skipped and not self.stopping:
                skipped = False
                with contextlib.suppress(RuntimeError):  # the runner's task group already closing
                    self._runs_task_group.start_soon(poll_now)

        async def poll_now() -> None:
            try:
                await get_and_submit()
            except Exception as exc:  # noqa: BLE001  (the regular poll carries on)
                logger.warning("polling for scheduled runs failed: %s", exc)

        async def get_and_submit(*args: Any, **kwargs: Any) -> None:
            nonlocal skipped
            if gate.queue_full():
                skipped = True
                if gate.moving():
                    poller.last_polled = now("UTC")
                return
            skipped = False
            await poll(*args, **kwargs)

        gate.on_room = room
        return get_and_submit


SCHEDULED_TYPES = {"SCHEDULED"}
LOOK_AGAIN_SECONDS = (0.05, 0.1)  # the pauses before each look again: an answer's commit lands 20-40 ms after its event


async def listen_for_scheduled_runs(mine: Callable[[set[str]], bool], poll: Callable[[], Awaitable[Any]],
                                    stopping: Callable[[], bool], fallback_seconds: float,
                                    busy: Callable[[], set[UUID]] = set,
                                    taken: Callable[[], set[UUID]] | None = None) -> None:
    """Call `poll()` when the server says a run is scheduled (new, or a suspended one resumed) whose related
    resources (`prefect.deployment.<id>`, `prefect.work-pool.<id>`, ...) are `mine`. Events that arrive while a
    poll runs make one more poll, not one each: a storm of alerts does not become a storm of queries.

    The server may send a state's event before the request that set it has committed (the answer's call had not
    returned yet), so a poll at once may not find the run: after each poll, the listener looks again after each
    pause of `LOOK_AGAIN_SECONDS`, instead of the regular poll up to `fallback_seconds` later. With `taken()` (the
    runs this runner or worker has in hand: being submitted, running, or an attempt still ending), it looks again
    only while a run told of is not among them: a poll takes the server's write lock (it records who polled), and
    one at the wrong moment holds up the run's own state changes. Without it, it always looks again.

    `busy()` gives the runs whose last attempt is still ending (a runner's poll skips them, and so does the runbook
    worker's: app/worker.py). A wait answered at once is resumed while its suspended attempt is still ending: that
    run is polled for again the moment the attempt has ended (and looked for again as above), not at the next
    regular poll."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = {"now": anyio.Event()}
    held: set[str] = set()  # runs told of while an attempt of theirs was still ending
    told: set[str] = set()  # runs told of that no poll has been seen to take yet

    def still_looked_for() -> bool:
        if taken is not None:
            told.difference_update(str(run_id) for run_id in taken())
        return bool(told)

    async def poll_once() -> None:
        try:
            await poll()
        except Exception as exc:  # noqa: BLE001  (the regular poll carries on)
            logger.warning("polling for scheduled runs failed: %s", exc)

    async def poller() -> None:
        while True:
            await wanted["now"].wait()
            wanted["now"] = anyio.Event()
            looking = set(told)  # what this poll and its looks are for; runs told of meanwhile get their own
            await poll_once()
            for pause in LOOK_AGAIN_SECONDS:
                if not still_looked_for():
                    break
                with anyio.move_on_after(pause):
                    await wanted["now"].wait()
                if wanted["now"].is_set():
                    break  # told again meanwhile: the next poll goes at once
                await poll_once()
            else:
                told.difference_update(looking)  # not found after every look: the regular poll takes over

    async def attempts_ended() -> None:
        while True:
            await anyio.sleep(0.05)
            if held:
                ending = {str(run_id) for run_id in busy()}
                if held - ending:
                    told.update(held - ending)
                    held.intersection_update(ending)
                    wanted["now"].set()

    event_filter = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]))
    async with anyio.create_task_group() as group:
        group.start_soon(poller)
        group.start_soon(attempts_ended)
        while not stopping():
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    async for event in subscriber:
                        state = (event.payload or {}).get("validated_state") or {}
                        if state.get("type") in SCHEDULED_TYPES and mine({r.id for r in event.related}):
                            run_id = event.resource.id.removeprefix("prefect.flow-run.")
                            if run_id in {str(r) for r in busy()}:
                                held.add(run_id)
                            told.add(run_id)
                            wanted["now"].set()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # the poll carries on; try the stream again shortly
                logger.warning("event stream unavailable (%s); polling every %s s until it is back", exc, fallback_seconds)
                await anyio.sleep(5)
        group.cancel_scope.cancel()


def deployments_of(runner: Runner) -> Callable[[set[str]], bool]:
    def mine(related: set[str]) -> bool:
        return any(f"prefect.deployment.{d}" in related for d in runner._deployment_registry.get_deployment_ids())

    return mine
