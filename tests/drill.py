"""Running a runbook in a test as a drill would: against the session's real Prefect server."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

from prefect import tags
from prefect.client.orchestration import get_client

from flows.answers import pending_steps
from flows.record.archive import IncidentRecord, find_record
from flows.catalog import FLOWS


def drill(runbook_id: str, answers: dict[str, Any] | None = None, *, params: dict[str, Any] | None = None,
          severity: str | None = None, time_scale: float = 3600.0, auto: bool = False) -> tuple[Any, IncidentRecord]:
    """Run a runbook to the end with scripted answers; return its final state and its archived record."""
    with tags(f"runbook:{runbook_id}", "drill", "test"):
        state = FLOWS[runbook_id](parameters=params or {}, answers=answers or {}, severity=severity, drill=True,
                                  time_scale=time_scale, auto=auto, return_state=True)
    record = find_record(str(state.state_details.flow_run_id))
    assert record is not None, f"no archive record for {runbook_id}: {state.message}"
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


def pause_key(run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return state.state_details.pause_key if state and state.is_paused() else None
