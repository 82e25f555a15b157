"""Grade steps: the runbook's grading rules decide the incident's level, unless a person set it by hand."""

from __future__ import annotations

from runbooks.model import GradeStep
from tasks.incident import Incident
from tasks.steps import Walk, note, runs


@runs("grade")
def run(inc: Incident, step: GradeStep, walk: Walk) -> dict:
    rb = inc.runbook
    if inc.severity_override:
        inc.record("severity.kept", f"level {inc.severity} was set by hand", step=step.id, severity=inc.severity)
    else:
        inc.severity, inc.severity_reason = rb.severity.default, "no rule held; default level"
        for rule in rb.severity.rules:
            if inc.holds(rule.when):
                inc.severity, inc.severity_reason = rule.level, rule.reason.both()
                break
        inc.record("severity.graded", f"{inc.level_label()}: {inc.severity_reason}", step=step.id, severity=inc.severity)
    note(step, inc, {"severity": inc.severity, "reason": inc.severity_reason})
    return {"severity": inc.severity, "reason": inc.severity_reason}
