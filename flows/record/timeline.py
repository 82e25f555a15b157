"""An incident's timeline: the journal and Prefect's own history, merged and ordered by time.

Two witnesses, kept apart by `source`:

- the journal (`journal`): what the runbook saw and decided — answers, approvals,
  escalations, pages, thresholds, deadlines — recorded by `Incident.record()`;
- Prefect (`prefect`): what the orchestrator saw — the state changes of the run, of
  its parallel tracks (child flow runs) and of every step's task run (retries
  included), plus every form submitted to a paused run (accepted or not) and a
  resolved alert delivered to it, read back from the flow run inputs.

Prefect prunes events and runs can be deleted, so the Prefect side is also
written into the archive record when the run ends (`IncidentRecord.history`);
`flows/record/report.py: build_timeline` reads whatever is still there.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterable, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId)
from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from tasks.client import sync_client
from tasks.incident import alert_summary
from tasks.journal import Entry, entries_of
from tasks.inputs import RESOLUTION_KEY, ask_key, ask_of, read_dated, read_json, step_of

logger = logging.getLogger("runbook.timeline")

# Prefect states that say nothing a responder needs (every task run passes through them).
_QUIET_STATES = {"Pending", "Scheduled"}


class TimelineEntry(BaseModel):
    """One thing that happened, with when and who."""

    at: datetime
    kind: str = Field(description="Journal kind (step.answered, deadline.missed, ...) or flow.*, track.*, task.*, form.submitted, alert.resolved.")
    source: Literal["journal", "prefect"]
    actor: str = Field(description="A person id, 'runbook' (the engine), 'prefect' (the orchestrator) or 'alert'.")
    step: str | None = None
    text: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    def key(self) -> tuple[str, str, str | None, str]:
        """What identifies an entry across exports (JSON, HTML, Markdown) for comparisons."""
        return (iso(self.at), self.kind, self.step, self.actor)


class Timeline(BaseModel):
    flow_run_id: str
    runbook: str | None = None
    entries: list[TimelineEntry] = Field(default_factory=list)
    prefect_available: bool = Field(True, description="False when the run is gone from Prefect and its history came from the archive.")

    def of(self, kind: str) -> list[TimelineEntry]:
        return [e for e in self.entries if e.kind == kind]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]


def iso(at: datetime) -> str:
    """One spelling of an instant (UTC, microseconds), whatever tzinfo it came with."""
    return at.astimezone(timezone.utc).isoformat()


# ---------------------------------------------------------------- the journal side


def from_journal(journal: Iterable[Entry]) -> list[TimelineEntry]:
    """Journal entries as timeline entries; an entry without an actor was the engine's own doing."""
    return [TimelineEntry(at=e.at, kind=e.kind, source="journal", actor=e.actor or "runbook", step=e.step,
                          text=e.text, data=e.data) for e in journal]


def journal_from_events(flow_run_id: str) -> list[Entry]:
    """The journal as Prefect events (`runbook.<kind>` on `runbook.incident.<id>`), for a run not archived yet."""
    # Oldest first: the pages are counted from the first event, so the events a running attempt adds while this
    # reads come after them. (Newest first, Prefect's default, each new event moved every later page by one, and
    # an event at a page's end was read again on the next: a report showed an earlier attempt's pages twice.)
    # And each event once by its id, should one arrive late and move the pages all the same.
    flt = EventFilter(event=EventNameFilter(prefix=["runbook."]),
                      resource=EventResourceFilter(id=[f"runbook.incident.{flow_run_id}"]), order=EventOrder.ASC)
    entries: list[Entry] = []
    seen: set = set()
    with sync_client() as client:
        page = client.read_events(filter=flt, limit=50)  # the server allows at most 50 a page
        while True:
            for ev in page.events:
                if ev.id in seen:
                    continue
                seen.add(ev.id)
                entries += entries_of(ev.event.removeprefix("runbook."), ev.occurred, ev.payload)
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
    return sorted(entries, key=lambda e: e.at)


# ---------------------------------------------------------------- the Prefect side


def prefect_history(flow_run_id: str) -> list[TimelineEntry]:
    """State changes of the run, its track runs and their task runs; forms submitted; alert resolution.

    Raises `prefect.exceptions.ObjectNotFound` when the run is gone.
    """
    out: list[TimelineEntry] = []
    with sync_client() as client:
        root = client.read_flow_run(UUID(str(flow_run_id)))
        runs, frontier = [root], [root.id]
        while frontier:  # tracks may nest parallel steps of their own
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)), limit=200)
            children = [c for c in children if c.id not in {r.id for r in runs}]
            runs += children
            frontier = [c.id for c in children]
        wrapper_tasks = {r.parent_task_run_id for r in runs if r.parent_task_run_id}
        for run in runs:
            is_root = run.id == root.id
            track = None if is_root else run.name.split(" · ")[-1]
            states = client.read_flow_run_states(run.id)
            for state in states:
                if state.name in _QUIET_STATES:
                    continue
                out.append(TimelineEntry(
                    at=state.timestamp, kind=f"{'flow' if is_root else 'track'}.{_slug(state.name)}", source="prefect",
                    actor="prefect", step=track, text=state.message or "",
                    data={"flow_run_id": str(run.id), "state": state.name, "type": state.type.value}))
            out += _inputs(client, run.id, states, track)
        task_runs, page = [], None
        while page is None or len(page) == 200:  # the server returns at most 200 a call
            page = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs])), limit=200, offset=len(task_runs))
            task_runs += page
        for tr in task_runs:
            if tr.id in wrapper_tasks:
                continue  # the placeholder task run of a child flow run; its states are the track's
            for state in client.read_task_run_states(tr.id):
                if state.name in _QUIET_STATES and state.name != "AwaitingRetry":
                    continue
                out.append(TimelineEntry(
                    at=state.timestamp, kind=f"task.{_slug(state.name)}", source="prefect", actor="prefect",
                    step=tr.name, text=state.message or "",
                    data={"task_run_id": str(tr.id), "flow_run_id": str(tr.flow_run_id), "state": state.name,
                          "type": state.type.value, "run_count": tr.run_count}))
    return sorted(out, key=lambda e: e.at)


def _inputs(client, run_id: UUID, states: list, track: str | None) -> list[TimelineEntry]:
    """Forms submitted to the run's pauses and a delivered alert resolution, read back from the flow run inputs.

    Each Paused state names its pause key, so each response is read by its exact key
    (`paused-<step>-<n>-response`; the prefix filter was seen to return nothing on
    PostgreSQL). A form is submitted by the resume that ends the pause, so it is
    dated by the state that follows the Paused one.
    """
    out: list[TimelineEntry] = []
    for state, after in zip(states, [*states[1:], None]):
        pause_key = state.state_details.pause_key if state.is_paused() else None
        step, ask = step_of(pause_key), ask_of(pause_key)
        value = _read_input(client, run_id, ask_key(step, ask, "response")) if pause_key and ask is not None else None
        if value is None:
            continue
        value = value if isinstance(value, dict) else {"value": value}
        out.append(TimelineEntry(
            at=after.timestamp if after else state.timestamp, kind="form.submitted", source="prefect",
            actor=str(value.get("answered_by") or "unknown"), step=step or pause_key,
            text=", ".join(f"{k}={v}" for k, v in value.items() if k != "answered_by")[:500],
            data={"pause_key": pause_key, "ask": ask, "values": value,
                  "flow_run_id": str(run_id), "track": track}))
    alert = _read_input(client, run_id, RESOLUTION_KEY, dated=True)
    if alert is not None:
        at, alert = alert
        alert = alert if isinstance(alert, dict) else {}
        out.append(TimelineEntry(at=at, kind="alert.resolved", source="prefect", actor="alert",
                                 text=alert_summary(alert, "alert resolved"),
                                 data={"alert": alert}))
    return out


def _read_input(client, run_id: UUID, key: str, dated: bool = False) -> Any:
    """A flow run input's decoded value (with its creation time if `dated`), or None when there is none or it cannot be read."""
    try:
        return read_dated(client, run_id, key) if dated else read_json(client, run_id, key)
    except (ObjectNotFound, PrefectHTTPStatusError):
        return None


def _slug(name: str | None) -> str:
    """'AwaitingRetry' -> 'awaiting-retry', 'TimedOut' -> 'timed-out'."""
    out = ""
    for i, ch in enumerate(name or "unknown"):
        out += ("-" if ch.isupper() and i else "") + ch.lower()
    return out.replace(" ", "-")


# ---------------------------------------------------------------- both


def merge(journal: list[TimelineEntry], history: list[TimelineEntry]) -> list[TimelineEntry]:
    """One list in time order; at the same instant the journal (the runbook's reason) comes first."""
    return sorted([*journal, *history], key=lambda e: (e.at, 0 if e.source == "journal" else 1))
