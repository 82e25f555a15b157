"""The incident journal's lines, and how they reach Prefect: one event per line, `runbook.<kind>` on
`runbook.incident.<id>` (related to the incident's flow run, so the run's page in the UI lists them).

The Prefect server spends 3-4 ms of CPU on each event it takes in, and during a run of quick steps it is already
most of a CPU busy with the three events Prefect sends for each step's task run (docs/BENCHMARKS.md, "Where a quick
step's extra time goes"); a step's journal is two lines more, step.started and step.done. So that a quick step
costs the server one event for its journal, not two, a step's start is held a moment (`HOLD_SECONDS`) before it goes:
- the step is done by then: one event, its step.done, carries the start (`STARTED` in its payload);
- anything else is recorded about the step first (a page, a failed try): the start goes, then that line;
- the moment is up (a long action, a wait for a person): the start goes alone, from the post's own thread;
- the process is about to let its run go (`flush`: a suspended wait, the end): whatever is held goes.
Whoever reads the events back reads two lines either way (`entries_of`). A process killed within the moment
loses its step's start from the events, as it loses what its event client had not sent yet.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from prefect.events import emit_event

logger = logging.getLogger("runbook.journal")

HOLD_SECONDS = 0.5
STARTED = "started"  # the payload key of a step.done event that carries its step's start


class Entry(BaseModel):
    """One line of the incident journal."""

    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    kind: str = Field(description="step.started, step.done, step.answered, page.sent, threshold.fired, deadline.missed, ...")
    step: str | None = None
    actor: str | None = Field(None, description="Who did it: a person id, 'runbook' or 'drill'.")
    text: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


def emit_entry(incident_id: str, runbook_id: str, entry: Entry, *, drill: bool = False, started: Entry | None = None) -> None:
    """Publish a journal line as a Prefect event at once (with `started`: a step.done and its step's start in one).

    Also for what happens to an incident outside its process (an answer refused before it reached the run)."""
    payload = {"step": entry.step, "actor": entry.actor, "text": entry.text, "drill": drill,
               **_jsonable(entry.data)}
    if started is not None:
        payload[STARTED] = {"at": started.at.isoformat(), "actor": started.actor, "text": started.text,
                            "data": _jsonable(started.data)}
    try:
        emit_event(
            event=f"runbook.{entry.kind}",
            resource={"prefect.resource.id": f"runbook.incident.{incident_id}", "prefect.resource.name": runbook_id},
            related=[{"prefect.resource.id": f"prefect.flow-run.{incident_id}", "prefect.resource.role": "flow-run"}],
            payload=payload,
            occurred=entry.at,
        )
    except Exception as exc:  # an event that cannot be sent must not stop the incident
        logger.debug("could not emit event %s: %s", entry.kind, exc)


def entries_of(kind: str, occurred: datetime, payload: dict[str, Any]) -> list[Entry]:
    """The journal lines one `runbook.<kind>` event holds: one, or a step's start and its step.done."""
    payload = dict(payload)
    step, actor, text = payload.pop("step", None), payload.pop("actor", None), payload.pop("text", "")
    payload.pop("drill", None)
    started = payload.pop(STARTED, None) if kind == "step.done" else None
    lines = [Entry(at=occurred, kind=kind, step=step, actor=actor, text=text or "", data=payload)]
    if isinstance(started, dict):
        try:
            at = datetime.fromisoformat(started["at"])
        except (KeyError, TypeError, ValueError):
            at = occurred
        data = started.get("data")
        lines.insert(0, Entry(at=at, kind="step.started", step=step, actor=started.get("actor"),
                              text=started.get("text") or "", data=data if isinstance(data, dict) else {}))
    return lines


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """The entries of a line's data that an event's payload can carry."""
    return {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, type(None), list, dict))}


class _Held:
    __slots__ = ("incident_id", "runbook_id", "drill", "entry", "context", "due")

    def __init__(self, incident_id: str, runbook_id: str, drill: bool, entry: Entry) -> None:
        self.incident_id, self.runbook_id, self.drill, self.entry = incident_id, runbook_id, drill, entry
        self.context = contextvars.copy_context()  # the recording thread's Prefect settings, for the post's thread
        self.due = time.monotonic() + HOLD_SECONDS

    def send(self, done: Entry | None = None) -> None:
        if done is None:
            self.context.run(emit_entry, self.incident_id, self.runbook_id, self.entry, drill=self.drill)
        else:
            emit_entry(self.incident_id, self.runbook_id, done, drill=self.drill, started=self.entry)


class Post:
    """One per process: sends the journal's lines, holding each step's start a moment (see the module's docstring)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child holds nothing of its parent's, its lock free

    def _reset(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}  # (incident id, step id) -> its start, not sent yet
        self._changed = threading.Condition()
        self._sending = 0  # starts the post's thread has taken out and is sending
        self._thread: threading.Thread | None = None

    def send(self, incident_id: str, runbook_id: str, entry: Entry, *, drill: bool = False) -> None:
        if not entry.step:  # about no step: nothing of it is held
            emit_entry(incident_id, runbook_id, entry, drill=drill)
            return
        key = (incident_id, entry.step)
        with self._changed:
            held = self._held.pop(key, None)
            if entry.kind == "step.started":
                self._held[key] = _Held(incident_id, runbook_id, drill, entry)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True, name="journal-post")
                    self._thread.start()
                if len(self._held) == 1:  # else the post's thread is already waiting for an earlier one, due sooner
                    self._changed.notify()
        if held is not None and entry.kind == "step.done":
            held.send(entry)  # one event for both
            return
        if held is not None:
            held.send()
        if entry.kind != "step.started":
            emit_entry(incident_id, runbook_id, entry, drill=drill)

    def flush(self, timeout: float = 5.0) -> None:
        """Send every start held, now, and wait for those the post's thread is sending (the process is about to let
        its run go: Prefect's event client sends what it was given before the process ends)."""
        with self._changed:
            held, self._held = list(self._held.values()), {}
        for h in held:
            h.send()
        with self._changed:
            self._changed.wait_for(lambda: not self._sending, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._held:
                    self._changed.wait()
                now = time.monotonic()
                due = [k for k, h in self._held.items() if h.due <= now]
                ready = [self._held.pop(k) for k in due]
                if not ready:
                    self._changed.wait(min(h.due for h in self._held.values()) - now)
                    continue
                self._sending += len(ready)
            for h in ready:
                try:
                    h.send()
                except Exception as exc:  # noqa: BLE001  (the thread goes on for the next)
                    logger.warning("could not send a step's start to the journal: %s", exc)
            with self._changed:
                self._sending -= len(ready)
                self._changed.notify_all()


JOURNAL = Post()
