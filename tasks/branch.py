"""Branch steps: the first case whose condition holds runs; otherwise the fallback steps."""

from __future__ import annotations

from runbooks.model import BranchStep
from tasks.incident import Incident
from tasks.steps import Walk, note, runs


@runs("branch")
def run(inc: Incident, step: BranchStep, walk: Walk) -> dict:
    for index, case in enumerate(step.cases):
        if inc.holds(case.when):
            note(step, inc, {"case": index + 1, "when": case.when})
            inc.record("branch.taken", f"case {index + 1}: {case.when}", step=step.id, case=index + 1)
            walk(inc, case.steps)
            return {"case": index + 1}
    note(step, inc, {"case": "otherwise"})
    inc.record("branch.taken", "otherwise", step=step.id, case="otherwise")
    walk(inc, step.otherwise)
    return {"case": "otherwise"}
