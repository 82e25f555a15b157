"""End steps: the incident ends here, resolved or failed."""

from __future__ import annotations

from runbooks.model import EndStep
from tasks.incident import Incident, IncidentEnded
from tasks.steps import Walk, note, runs


@runs("end")
def run(inc: Incident, step: EndStep, walk: Walk) -> dict:
    message = inc.text(step.title, "zh") + " / " + inc.text(step.title, "en")
    note(step, inc, {"outcome": step.outcome})
    inc.set_result(step.id, {"status": "done", "outcome": step.outcome})
    raise IncidentEnded(step.outcome, message)
