"""Grade steps: the runbook's grading rules decide the incident's level, unless a person set it by hand.

A runbook may grade more than once (first figures at launch, real figures once they are known): a later
grade step that lands on another level records `severity.changed`, tags the run `severity:<level>`, and
every page after it carries the new level.
"""

from __future__ import annotations

from uuid import UUID

from runbooks.model import GradeStep
from tasks.client import sync_client
from tasks.incident import Incident
from tasks.steps import Walk, note, runs


@runs("grade")
def run(inc: Incident, step: GradeStep, walk: Walk) -> dict:
    rb = inc.runbook
    before = inc.severity
    if inc.severity_override:
        inc.record("severity.kept", f"level {inc.severity} was set by hand", step=step.id, severity=inc.severity)
    else:
        inc.severity, inc.severity_reason = rb.severity.default, "no rule held; default level"
        for rule in rb.severity.rules:
            if inc.holds(rule.when):
                inc.severity, inc.severity_reason = rule.level, rule.reason.both()
                break
        inc.record("severity.graded", f"{inc.level_label()}: {inc.severity_reason}", step=step.id, severity=inc.severity)
        graded_before = any(e.kind == "severity.graded" and e.step != step.id for e in inc.journal)
        if graded_before and before != inc.severity:
            inc.record("severity.changed", f"{before} → {inc.severity}: {inc.severity_reason}", step=step.id,
                       previous=before, severity=inc.severity)
    _tag(inc)
    note(step, inc, {"severity": inc.severity, "reason": inc.severity_reason})
    return {"severity": inc.severity, "reason": inc.severity_reason}


def _tag(inc: Incident) -> None:
    """The run's tags name its current level, so the runs list shows a regrade."""
    try:
        with sync_client() as client:
            run = client.read_flow_run(UUID(inc.id))
            tags = [t for t in run.tags if not t.startswith("severity:")] + [f"severity:{inc.severity}"]
            client.update_flow_run(UUID(inc.id), tags=tags)
    except Exception as exc:  # a tag is a convenience; the journal has the grade
        inc.record("severity.untagged", str(exc), step=None)
