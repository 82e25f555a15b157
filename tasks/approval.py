"""Approval steps: someone with the authority approves or rejects; a rejection runs its own steps."""

from __future__ import annotations

from runbooks.model import ApprovalStep
from tasks.incident import Incident, IncidentEnded
from tasks.people import wait_for_people
from tasks.steps import Walk, note, runs


@runs("approval")
def run(inc: Incident, step: ApprovalStep, walk: Walk) -> dict:
    answer = wait_for_people(inc, step, walk, kind="approval")
    if answer is None:
        return {"status": "expired"}
    record = note(step, inc, answer)
    if answer["decision"] == "reject":
        inc.set_result(step.id, {**record, "status": "rejected"})
        inc.record("approval.rejected", answer.get("comment") or "", step=step.id, actor=answer["answered_by"])
        walk(inc, step.on_reject)
        if not step.continue_on_reject:
            raise IncidentEnded("rejected", f"{step.id} rejected by {answer['answered_by']}")
        return {**record, "status": "rejected"}
    inc.record("approval.approved", answer.get("comment") or "", step=step.id, actor=answer["answered_by"])
    return record
