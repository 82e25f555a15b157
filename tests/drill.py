"""Running a runbook in a test as a drill would: against the session's real Prefect server.

`drill()` runs a runbook either here, calling its flow (`local`, like `runbook run`), or on the served
stack (`served`, like `runbook fire` and production: a deployment run in a process of its own, waits
suspended, the escalation watcher). tests/runbooks/conftest.py runs every drill test both ways.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from typing import Any, Iterator
from uuid import UUID

from prefect import tags
from prefect.client.orchestration import get_client

from flows.answers import pending_steps
from flows.record.archive import IncidentRecord, find_record
from flows.catalog import FLOWS


SERVED_TIMEOUT = 300.0  # start_incident to a final state: 2-5 s to start its process; 120 s was too short for grid-earthquake on a loaded 2-core box

_mode: dict[str, Any] = {"mode": "local", "stack": None}


@contextlib.contextmanager
def drill_mode(mode: str, stack: Any = None) -> Iterator[None]:
    """Within: drill() runs `local` (the flow called here) or `served` (on `stack`, the served_stack fixture)."""
    assert mode in ("local", "served") and (mode == "local" or stack is not None), (mode, stack)
    before = dict(_mode)
    _mode.update(mode=mode, stack=stack)
    try:
        yield
    finally:
        _mode.update(before)


def drill(runbook_id: str, answers: dict[str, Any] | None = None, *, params: dict[str, Any] | None = None,
          severity: str | None = None, time_scale: float = 3600.0, auto: bool = False,
          clock: datetime | None = None) -> tuple[Any, IncidentRecord]:
    """Run a runbook to the end with scripted answers; return its final state and its archived record."""
    if _mode["mode"] == "served":
        return _drill_served(runbook_id, answers, params=params, severity=severity, time_scale=time_scale, auto=auto,
                             clock=clock)
    with tags(f"runbook:{runbook_id}", "drill", "test"):
        state = FLOWS[runbook_id](parameters=params or {}, answers=answers or {}, severity=severity, drill=True,
                                  time_scale=time_scale, auto=auto, clock=clock, return_state=True)
    record = find_record(str(state.state_details.flow_run_id))
    assert record is not None, f"no archive record for {runbook_id}: {state.message}"
    return state, record


def _drill_served(runbook_id: str, answers: dict[str, Any] | None, *, params: dict[str, Any] | None,
                  severity: str | None, time_scale: float, auto: bool, clock: datetime | None) -> tuple[Any, IncidentRecord]:
    """The same drill through the deployment `<id>/runbook`: started as an alert would, read back from the API.

    The state returned is the run's final state as the server has it (a client State: name, message, type,
    state_details.flow_run_id), the record the one the run archived."""
    from prefect.states import Cancelled

    from flows.launch import start_incident

    stack = _mode["stack"]
    stack.check()
    run = start_incident(runbook_id, params or {}, severity=severity, drill=True, time_scale=time_scale, auto=auto,
                         answers=answers or {}, clock=clock)
    deadline = time.monotonic() + SERVED_TIMEOUT
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(run.id)
            state = flow_run.state
            if state is not None and state.is_final():
                break
            if time.monotonic() > deadline:
                # free the deployment's concurrency slot for the next test
                client.set_flow_run_state(run.id, Cancelled(message="drill timed out in a test"), force=True)
                waits = [p.step for p in pending_steps() if p.flow_run_id == str(run.id)]
                raise AssertionError(f"served drill of {runbook_id} (run {run.id}) not final within {SERVED_TIMEOUT:.0f} s: "
                                     f"{state.name if state else None} {state.message if state else ''}; waiting at {waits}\n"
                                     f"{stack.tail('serve')}")
            stack.check()
            time.sleep(0.2)
    record = None
    until = time.monotonic() + 10
    while record is None and time.monotonic() < until:
        record = find_record(str(run.id))
        if record is None:
            time.sleep(0.2)
    assert record is not None, f"no archive record for {runbook_id} (run {run.id}, {state.name}): {state.message}\n{stack.tail('serve')}"
    return state, record


def path(record: IncidentRecord) -> list[str]:
    """Steps that ran (not skipped), in the order they started."""
    return [e.step for e in record.journal if e.kind == "step.started"]


def skipped(record: IncidentRecord) -> list[str]:
    return [e.step for e in record.journal if e.kind == "step.skipped"]


class Background:
    """Run a flow in a thread while the test answers it from outside, as people would."""

    started: list["Background"] = []

    def __init__(self, flow, *, test_tags: tuple[str, ...] = ("test",), **kwargs):
        self.label = kwargs.get("incident")
        self.started.append(self)
        self.state = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(flow, test_tags, kwargs), daemon=True)
        self.thread.start()

    def _run(self, flow, test_tags, kwargs):
        try:
            with tags(*test_tags):
                self.state = flow(return_state=True, **kwargs)
        except BaseException as exc:  # noqa: BLE001  (reported by join)
            self.error = exc

    def join(self, seconds: float = 90):
        self.thread.join(seconds)
        assert self.error is None, f"the run raised {self.error!r}"
        assert self.state is not None, "the run did not finish"
        return self.state


def waiting(step: str, *, label: str | None = None, run_id: str | None = None):
    """The pending step, or None."""
    for p in pending_steps():
        if p.step == step and (run_id is None or p.flow_run_id == run_id) and (label is None or label in p.run_name):
            return p
    return None


def wait_for_step(step: str, *, label: str | None = None, run_id: str | None = None, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = waiting(step, label=label, run_id=run_id)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no run waited at step {step} within {seconds} s")


def wait_for_task_done(flow_run_id: str, task: str, seconds: float = 30) -> None:
    """Until the flow run's task run of that name has completed (a step done, seen from outside)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
                                         task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[task])))
            if any(r.state and r.state.is_completed() for r in runs):
                return
            time.sleep(0.2)
    raise AssertionError(f"step {task} of run {flow_run_id} was not done within {seconds} s")


def pause_key(run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return state.state_details.pause_key if state and state.is_paused() else None
