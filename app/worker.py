"""The `runbook` worker type: Prefect's process worker, its runs started warm.

    runbook worker --pool runbooks                      # or: prefect worker start --pool runbooks --type runbook

Registered with Prefect the way worker packages are (the `prefect.collections` entry point in
pyproject.toml), so `prefect worker start --type runbook` finds it and a work pool of type
`runbook` offers the process worker's job variables (env, working_dir, command...). Everything
but the start of a run is Prefect's ProcessWorker: polling, states, cancellation, concurrency
limits, heartbeats, the UI. A run starts forked from the warm forkserver (app/warm.py), and the
worker polls as soon as the server's events say a run of its pool is scheduled.

What a run's start does not repeat, where Prefect's process worker does it at every start and every
resume (about 0.3 s of a resume on two cores, before the run's process exists):
- one executor context (its client, control channel and cancellation observer) for the worker's life, as
  Prefect's Runner keeps one, instead of opening one per run (the observer's subscription alone is 0.15 s).
  As in the Runner, an attempt of a run is not submitted while its previous attempt is still ending in it
  (a wait answered at once): its process, control and observer registrations are by run id. It is submitted
  the moment that attempt has ended. A cancellation that fails (the run deleted meanwhile) is logged, where
  in the shared context it would end the worker and every run. As in the Runner, the context's observer
  that gives up after a long outage stops cancelling runs until the worker restarts (Prefect warns of it,
  and PREFECT_RUNNER_CRASH_ON_CANCELLATION_FAILURE makes it crash them instead);
- the worker's labels are not written again onto a run that already carries them (each resume did);
- a submission reads its deployment once, not twice, and a flow's record once per worker;
- the worker's Prefect settings are turned into a run's environment once per worker (app/warm.py
  `settings_environment`), where Prefect's worker and its starter each computed them again for every start and resume.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.abc

from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.settings import PREFECT_WORKER_QUERY_SECONDS
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from app.warm import StartGate, WarmStarter, forkserver, listen_for_scheduled_runs, settings_environment
from tasks.client import share_tls_with_prefect_clients

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

WORKER_TYPE = "runbook"
logger = logging.getLogger("runbook.worker")


class RunbookJobConfiguration(ProcessJobConfiguration):
    """The process worker's job configuration (the same fields and template); its base environment computed once."""

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        return settings_environment()


class RunbookWorker(ProcessWorker):
    type = WORKER_TYPE
    job_configuration = RunbookJobConfiguration
    _display_name = "Runbook (warm process)"
    _description = ("Runs response-runbooks incidents as local processes forked from a warm parent that has already "
                    "imported Prefect and every runbook: a run's first step within a second of its alert.")
    _documentation_url = "https://github.com/response-runbooks/response-runbooks/blob/main/docs/production.md"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        share_tls_with_prefect_clients()  # before Prefect's worker makes its client: no TLS context built per client
        super().__init__(*args, **kwargs)
        self._forkserver = forkserver()
        self._start_gate = StartGate()
        self._listening = anyio.CancelScope()
        self._executor: FlowRunExecutorContext | None = None
        self._submitting: dict[UUID, "FlowRun"] = {}
        self._attempts: set[UUID] = set()  # runs with an attempt in the shared executor context, until it has ended
        self._reads: _ReadOnce | None = None

    async def setup(self) -> None:
        # entered before Prefect's setup, so it closes after the runs' task group has seen every run through
        self._executor = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        _cancellations_that_fail_alone(self._executor)
        try:
            await super().setup()
        except BaseException:
            # Prefect's __aenter__ leaves a failed setup as it is, and its stack now holds the context: its own
            # teardown stops what setup started (the worker channel's loop first, which would keep the close waiting);
            # the error is this method's to raise, not the stack's to carry
            await self.teardown(None, None, None)
            raise
        self._reads = _ReadOnce(self.client)
        self._listening = anyio.CancelScope()
        self._runs_task_group.start_soon(self._listen)

    async def teardown(self, *exc_info: Any) -> None:
        self._listening.cancel()  # before the runs' task group is awaited
        await super().teardown(*exc_info)
        self._executor = None

    async def _listen(self) -> None:
        def mine(related: set[str]) -> bool:
            pool = getattr(self._work_pool, "id", None)
            return pool is not None and f"prefect.work-pool.{pool}" in related

        with self._listening:
            await listen_for_scheduled_runs(mine, self.get_and_submit_flow_runs, lambda: not self.is_setup,
                                            PREFECT_WORKER_QUERY_SECONDS.value(), busy=lambda: self._attempts,
                                            taken=lambda: self._submitting_flow_run_ids | self._attempts)

    async def _submit_scheduled_flow_runs(self, flow_run_response: list) -> list["FlowRun"]:
        """Prefect's, but a run whose last attempt is still ending waits for it (see the module's docstring)."""
        ready = [entry for entry in flow_run_response if entry.flow_run.id not in self._attempts]
        return await super()._submit_scheduled_flow_runs(ready)

    async def _submit_run(self, flow_run: "FlowRun") -> None:
        self._submitting[flow_run.id] = flow_run
        if flow_run.deployment_id:
            self._reads.fresh(flow_run.deployment_id)
        try:
            await super()._submit_run(flow_run)
        finally:
            self._submitting.pop(flow_run.id, None)

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """Prefect's, skipped for a run that carries these labels already (it is resumed on the pool it ran on)."""
        run = self._submitting.get(flow_run_id)
        labels = {"prefect.worker.name": self.name, "prefect.worker.type": self.type}
        if self._work_pool:
            labels.update({"prefect.work-pool.name": self._work_pool.name, "prefect.work-pool.id": str(self._work_pool.id)})
        if run is not None and all((run.labels or {}).get(k) == v for k, v in labels.items()):
            return
        await super()._give_worker_labels_to_flow_run(flow_run_id)

    async def run(self, flow_run: "FlowRun", configuration: ProcessJobConfiguration,
                  task_status: anyio.abc.TaskStatus[int] | None = None) -> ProcessWorkerResult:
        if configuration._command_configured:  # a pool or deployment that names its own command gets it, as in Prefect
            return await super().run(flow_run, configuration, task_status)
        if task_status is None:
            task_status = anyio.TASK_STATUS_IGNORED
        env = dict(configuration.env or {})
        ctx = self._executor
        if ctx is None:
            raise RuntimeError("the runbook worker runs flow runs only once set up (`async with RunbookWorker(...)`)")
        starter = WarmStarter(context=self._forkserver, env=env, cwd=configuration.working_dir,
                              control_channel=ctx.control_channel, flow_name=env.get("PREFECT__FLOW_NAME"),
                              deployment_name=env.get("PREFECT__DEPLOYMENT_NAME"), record_pid=False, gate=self._start_gate)
        executor = ctx.create_executor(flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False)
        execution = None

        async def execute(*, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal execution
            execution = await executor.submit(task_status=task_status)

        self._attempts.add(flow_run.id)
        try:
            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                if handle.pid is None:
                    raise RuntimeError("Flow run process has no PID")
                task_status.started(handle.pid)
        finally:
            self._attempts.discard(flow_run.id)
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


def _cancellations_that_fail_alone(ctx: FlowRunExecutorContext) -> None:
    """A cancellation that raises (its run deleted meanwhile, the server away past the client's retries) is logged:
    it runs in the context's task group, which in a context shared by every run would end them all with it."""
    manager = ctx._cancellation_manager
    cancel = manager.cancel_by_id

    async def cancel_by_id(flow_run_id: UUID) -> None:
        try:
            await cancel(flow_run_id)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not cancel flow run %s: %s", flow_run_id, exc)

    manager.cancel_by_id = cancel_by_id


class _ReadOnce:
    """The worker client's deployment and flow reads, remembered: Prefect's worker reads a run's deployment twice
    within a moment as it submits it (to check it exists, then to build the job from it), and the run's flow each
    time. The first read of each submission goes to the server (`fresh`), the second is its answer; a flow's
    record (its name and id) never changes, so it is read once per worker. Each caller gets a copy of the deployment:
    building a job changes its job variables in place."""

    def __init__(self, client: Any) -> None:
        self._read_deployment, self._read_flow = client.read_deployment, client.read_flow
        self._deployments: dict[Any, Any] = {}
        self._flows: dict[Any, Any] = {}
        client.read_deployment, client.read_flow = self.read_deployment, self.read_flow

    def fresh(self, deployment_id: Any) -> None:
        self._deployments.pop(deployment_id, None)

    async def read_deployment(self, deployment_id: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return await self._read_deployment(deployment_id, *args, **kwargs)
        if deployment_id not in self._deployments:
            self._deployments[deployment_id] = await self._read_deployment(deployment_id)
        return self._deployments[deployment_id].model_copy(deep=True)

    async def read_flow(self, flow_id: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return await self._read_flow(flow_id, *args, **kwargs)
        if flow_id not in self._flows:
            self._flows[flow_id] = await self._read_flow(flow_id)
        return self._flows[flow_id]


def worker_command(pool: str, *, name: str | None = None, limit: int | None = None) -> list[str]:
    """`prefect worker start` for a `runbook` worker on `pool` (created with that type if missing): Prefect's own
    command, with its signal handling, health and logging, so nothing of the worker's life is ours."""
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", WORKER_TYPE]
    if name:
        command += ["--name", name]
    if limit is not None:
        command += ["--limit", str(limit)]
    return command
