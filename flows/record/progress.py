"""How far the plan is, while it runs: a Prefect progress artifact on the incident's run.

The responder watching the run page sees a bar (main-line steps finished out of
all of them) and, in its description, the checklist of main-line steps with the
one most recently finished. It is updated each time a step records its result
(`Incident.on_result`), from whichever thread finished it (main line, a track's
child flow run, the time-rule watcher), so updates are serialised here.
"""

from __future__ import annotations

import logging
import threading
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.incident import Incident

logger = logging.getLogger("runbook.progress")

_DONE = {"done", "skipped", "failed", "expired", "rejected"}
_artifacts: dict[str, UUID] = {}
_lock = threading.Lock()


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


def follow_progress(inc: Incident) -> None:
    """Create the progress artifact on this run and keep it current. Never fails the incident."""
    try:
        _artifacts[inc.id] = create_progress_artifact(progress=percent(inc), key=progress_key(inc),
                                                      description=checklist(inc))
    except Exception as exc:
        logger.warning("could not create the progress artifact: %s", exc)
        return
    inc.on_result.append(lambda step_id, result: _update(inc, last=step_id))


def finish_progress(inc: Incident, outcome: str) -> None:
    """Last update when the incident closes: 100 % when resolved, else where it stopped."""
    _update(inc, outcome=outcome, progress=100.0 if outcome == "resolved" else None)
    _artifacts.pop(inc.id, None)


def _update(inc: Incident, *, last: str | None = None, outcome: str | None = None, progress: float | None = None) -> None:
    artifact_id = _artifacts.get(inc.id)
    if artifact_id is None:
        return
    try:
        with _lock:
            update_progress_artifact(artifact_id, progress=percent(inc) if progress is None else progress,
                                     description=checklist(inc, last=last, outcome=outcome))
    except Exception as exc:  # a progress bar that cannot be drawn must not stop the incident
        logger.debug("could not update the progress artifact: %s", exc)

