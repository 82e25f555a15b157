"""The `runbook` worker type: Prefect's process worker, its runs started warm.

    runbook worker --pool runbooks                      # or: prefect worker start --pool runbooks --type runbook

Registered with Prefect the way worker packages are (the `prefect.collections` entry point in
pyproject.toml), so `prefect worker start --type runbook` finds it and a work pool of type
`runbook` offers the process worker's job variables (env, working_dir, command...). Everything
but the start of a run is Prefect's ProcessWorker: polling, states, cancellation, concurrency
limits, heartbeats, the UI. A run starts forked from the warm forkserver (app/warm.py), and the
worker polls as soon as the server's events say a run of its pool is scheduled.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.settings import PREFECT_WORKER_QUERY_SECONDS
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from app.warm import WarmStarter, forkserver, listen_for_scheduled_runs

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

WORKER_TYPE = "runbook"


class RunbookWorker(ProcessWorker):
    type = WORKER_TYPE
    _display_name = "Runbook (warm process)"
    _description = ("Runs response-runbooks incidents as local processes forked from a warm parent that has already "
                    "imported Prefect and every runbook: a run's first step within a second of its alert.")
    _documentation_url = "https://github.com/response-runbooks/response-runbooks/blob/main/docs/production.md"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forkserver = forkserver()
        self._listening = anyio.CancelScope()

    async def setup(self) -> None:
        await super().setup()
        self._listening = anyio.CancelScope()
        self._runs_task_group.start_soon(self._listen)

    async def teardown(self, *exc_info: Any) -> None:
        self._listening.cancel()  # before the runs' task group is awaited
        await super().teardown(*exc_info)

    async def _listen(self) -> None:
        def mine(related: set[str]) -> bool:
            pool = getattr(self._work_pool, "id", None)
            return pool is not None and f"prefect.work-pool.{pool}" in related

        with self._listening:
            await listen_for_scheduled_runs(mine, self.get_and_submit_flow_runs, lambda: not self.is_setup,
                                            PREFECT_WORKER_QUERY_SECONDS.value())

    async def run(self, flow_run: "FlowRun", configuration: ProcessJobConfiguration,
                  task_status: anyio.abc.TaskStatus[int] | None = None) -> ProcessWorkerResult:
        if configuration._command_configured:  # a pool or deployment that names its own command gets it, as in Prefect
            return await super().run(flow_run, configuration, task_status)
        if task_status is None:
            task_status = anyio.TASK_STATUS_IGNORED
        env = dict(configuration.env or {})
        async with FlowRunExecutorContext() as ctx:
            starter = WarmStarter(context=self._forkserver, env=env, cwd=configuration.working_dir,
                                  control_channel=ctx.control_channel, flow_name=env.get("PREFECT__FLOW_NAME"),
                                  deployment_name=env.get("PREFECT__DEPLOYMENT_NAME"), record_pid=False)
            executor = ctx.create_executor(flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False)
            execution = None

            async def execute(*, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
                nonlocal execution
                execution = await executor.submit(task_status=task_status)

            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                if handle.pid is None:
                    raise RuntimeError("Flow run process has no PID")
                task_status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


def worker_command(pool: str, *, name: str | None = None, limit: int | None = None) -> list[str]:
    """`prefect worker start` for a `runbook` worker on `pool` (created with that type if missing): Prefect's own
    command, with its signal handling, health and logging, so nothing of the worker's life is ours."""
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", WORKER_TYPE]
    if name:
        command += ["--name", name]
    if limit is not None:
        command += ["--limit", str(limit)]
    return command
