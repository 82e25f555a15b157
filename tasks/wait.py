"""Wait steps: let time pass (scaled in drills) unless the incident closes."""

from __future__ import annotations

from runbooks.model import WaitStep
from tasks.incident import Incident
from tasks.steps import Walk, runs, step_task


@runs("wait")
def run(inc: Incident, step: WaitStep, walk: Walk) -> dict:
    def pause(step_id: str) -> dict:
        seconds = inc.seconds(step.duration)
        inc.sleep(seconds)
        return {"waited_seconds": round(seconds, 3)}

    return step_task(step, pause, inc)(step.id)
