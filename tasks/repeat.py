"""Repeat steps: recurring work (stage reports, readings) run iteration after iteration until a condition holds.

Iteration n runs the steps as `<id>--<n>` (runbooks.model.iteration_of), so each has its own task runs,
forms, cache keys and results; the latest result is copied under the plain id for templates and deadlines.
A scripted answer given for the plain id answers every iteration that has none of its own.
"""

from __future__ import annotations

import time

from runbooks.model import RepeatStep, iteration_of, step_ids
from tasks.incident import Incident
from tasks.steps import Walk, runs

POLL_SECONDS = 0.2  # how often the wait between iterations looks at `until` and the close


@runs("repeat")
def run(inc: Incident, step: RepeatStep, walk: Walk) -> dict:
    done = 0
    for n in range(1, step.max_count + 1):
        if n > 1 and (inc.closed.is_set() or (step.until and inc.holds(step.until)) or (step.every and _wait(inc, step))):
            break
        inc.record("repeat.iteration", f"iteration {n}", step=step.id, iteration=n)
        for child in step.steps:
            copy = iteration_of(child, n)
            pairs = list(zip(step_ids(child), step_ids(copy)))
            for base, ran in pairs:
                if base in inc.answers and ran not in inc.answers:
                    inc.answers[ran] = inc.answers[base]
            walk(inc, [copy])
            for base, ran in pairs:
                if ran in inc.steps:
                    inc.set_result(base, {**inc.steps[ran], "iteration": n})
        done = n
    inc.record("repeat.done", f"{done} iteration(s)", step=step.id, iterations=done)
    return {"iterations": done}


def _wait(inc: Incident, step: RepeatStep) -> bool:
    """Wait `every` (scaled); True when the repeat should end instead (`until` holds, or the incident closed)."""
    end = time.monotonic() + inc.seconds(step.every)
    while (left := end - time.monotonic()) > 0:
        if (step.until and inc.holds(step.until)) or inc.sleep(min(POLL_SECONDS, left)):
            return True
    return False

