"""How far the plan is, while it runs: a Prefect progress artifact on the incident's run.

The responder watching the run page sees a bar (main-line steps finished out of
all of them) and, in its description, the checklist of main-line steps with the
one most recently finished. It is updated each time a step records its result
(`Incident.on_result`), from whichever thread finished it (main line, a track's
child flow run, the time-rule watcher); one thread per incident draws it, so
no step waits on the API for a progress bar, at most once every DRAW_EVERY_SECONDS (a bar read by people needs
no more, and a run of quick steps would otherwise ask the server once a step).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.incident import Incident

logger = logging.getLogger("runbook.progress")

_DONE = {"done", "skipped", "failed", "expired", "rejected"}
DRAW_EVERY_SECONDS = 1.0
_drawers: dict[str, "_Drawer"] = {}


def progress_key(inc: Incident) -> str:
    return f"progress-{inc.runbook.id}"[:100]


def percent(inc: Incident) -> float:
    """Share of the main-line steps that have a final result, 0–100."""
    main = [s.id for s in inc.runbook.steps]
    finished = sum(1 for sid in main if inc.steps.get(sid, {}).get("status") in _DONE)
    return round(100.0 * finished / len(main), 1) if main else 100.0


def checklist(inc: Incident, last: str | None = None, outcome: str | None = None) -> str:
    marks = {"done": "✅", "skipped": "⏭", "failed": "❌", "expired": "⌛", "rejected": "⛔"}
    lines = [f"**{inc.runbook.title.zh} / {inc.runbook.title.en}**"
             + (f" — {outcome}" if outcome else "") + (f" · last: `{last}`" if last else ""), ""]
    for step in inc.runbook.steps:
        status = inc.steps.get(step.id, {}).get("status")
        lines.append(f"- {marks.get(status, '⬜')} {step.title.both()} (`{step.id}`)")
    return "\n".join(lines)


class _Drawer:
    """Draws one incident's progress artifact from a thread of its own, so no step waits on the API for it.

    Only the latest picture matters: updates that pile up while one is drawn collapse into one.
    """

    def __init__(self, inc: Incident) -> None:
        self.inc = inc
        self.artifact_id: UUID | None = None
        self.wanted: dict | None = {}  # the next picture to draw; {} = the current one
        self.changed = threading.Condition()
        self.closing = False
        self.resting = False  # between two draws: a new picture waits for the rest's end, without waking the thread
        context = contextvars.copy_context()  # the run's context: the artifact belongs to this flow run
        self.thread = threading.Thread(target=context.run, args=(self._draw,), daemon=True, name=f"progress-{inc.id}")
        self.thread.start()

    def want(self, **picture) -> None:
        with self.changed:
            self.wanted = picture
            if not self.resting:  # a step a few ms after the last would wake it only to rest again
                self.changed.notify()

    def close(self, timeout: float = 10.0, **picture) -> None:
        """Draw the last picture and wait (a while) until it is drawn."""
        with self.changed:
            self.wanted, self.closing = picture, True
            self.changed.notify()
        self.thread.join(timeout)

    def _draw(self) -> None:
        while True:
            with self.changed:
                while self.wanted is None and not self.closing:
                    self.changed.wait()
                picture, self.wanted = self.wanted, None
            if picture is not None:
                self._once(**picture)
            with self.changed:
                if self.closing and self.wanted is None:
                    return
                # a second's rest, cut short by close(); the pictures asked for meanwhile collapse into the next one
                self.resting = True
                self.changed.wait_for(lambda: self.closing, DRAW_EVERY_SECONDS)
                self.resting = False

    def _once(self, *, last: str | None = None, outcome: str | None = None, progress: float | None = None) -> None:
        inc = self.inc
        value = percent(inc) if progress is None else progress
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(progress=value, key=progress_key(inc),
                                                            description=checklist(inc, last=last, outcome=outcome))
            else:
                update_progress_artifact(self.artifact_id, progress=value, description=checklist(inc, last=last, outcome=outcome))
        except Exception as exc:  # a progress bar that cannot be drawn must not stop the incident
            logger.warning("could not draw the progress artifact: %s", exc)


def follow_progress(inc: Incident) -> None:
    """Create the progress artifact on this run and keep it current, off the steps' way. Never fails the incident."""
    drawer = _drawers[inc.id] = _Drawer(inc)
    inc.on_result.append(lambda step_id, result: drawer.want(last=step_id))


def finish_progress(inc: Incident, outcome: str) -> None:
    """Last update when the incident closes: 100 % when resolved, else where it stopped."""
    drawer = _drawers.pop(inc.id, None)
    if drawer is not None:
        drawer.close(outcome=outcome, progress=100.0 if outcome == "resolved" else None)


def flush_progress(inc: Incident, timeout: float = 5.0) -> None:
    """Before the process goes (a suspended wait): draw what is pending."""
    drawer = _drawers.pop(inc.id, None)
    if drawer is not None:
        drawer.close(timeout)
