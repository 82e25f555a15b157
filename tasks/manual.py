"""Manual steps: people do something and record it in the step's form."""

from __future__ import annotations

from runbooks.model import ManualStep
from tasks.incident import Incident
from tasks.people import wait_for_people
from tasks.steps import Walk, note, runs


@runs("manual")
def run(inc: Incident, step: ManualStep, walk: Walk) -> dict:
    answer = wait_for_people(inc, step, walk, kind="manual")
    return {"status": "expired"} if answer is None else note(step, inc, answer)
