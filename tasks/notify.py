"""Notify steps: page the people of some roles with a rendered message, and wait for their acknowledgement if asked."""

from __future__ import annotations

from runbooks.model import NotifyStep
from tasks.incident import Incident
from tasks.people import wait_for_people
from tasks.steps import Walk, runs, runs_beside, step_task


@runs("notify")
def run(inc: Incident, step: NotifyStep, walk: Walk) -> dict:
    def send(step_id: str) -> dict:
        return notify(inc, step)

    result = step_task(step, send, inc)(step.id)
    if step.ack:
        answer = wait_for_people(inc, step, walk, kind="ack")
        if answer is None:
            return {**result, "status": "expired"}
        result.update(answer)
    return result


@runs_beside("notify")
def notify(inc: Incident, step: NotifyStep) -> dict:
    """The page itself, as a plain call (a time rule sends it so, beside the main line)."""
    text = inc.both(step.message)
    title = f"{inc.runbook.title.zh} · {inc.text(step.title, 'zh')}"
    deliveries = inc.page(step.to, text, step=step.id, title=title, answer_options=["ack"] if step.ack else None)
    sent = [d for d in deliveries if d.outcome == "sent"]
    return {"sent": len(sent), "failed": len(deliveries) - len(sent), "people": sorted({d.person for d in sent}), "text": text}
