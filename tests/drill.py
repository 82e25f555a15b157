"""Running a runbook in a test as a drill would: against the session's real Prefect server."""

from __future__ import annotations

from typing import Any

from prefect import tags

from flows.archive import IncidentRecord, find_record
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
