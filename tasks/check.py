"""Check steps: probe until a condition holds or the time limit passes."""

from __future__ import annotations

import time
from typing import Any

from runbooks.model import CheckStep
from tasks.action import ActionFailed, perform
from tasks.incident import Incident, alert_summary
from tasks.inputs import prefect_away, read_resolution
from tasks.steps import Walk, runs, step_task


class CheckFailed(Exception):
    pass


@runs("check")
def run(inc: Incident, step: CheckStep, walk: Walk) -> dict:
    def probe(step_id: str) -> dict:
        return check(inc, step)

    return step_task(step, probe, inc)(step.id)


def check(incident: Incident, step: CheckStep) -> dict[str, Any]:
    deadline = time.monotonic() + incident.seconds(step.limit)
    interval = max(incident.seconds(step.interval), 0.05)
    probes, last, error = 0, None, None
    while True:
        if step.alert_resolved:
            try:
                resolution = read_resolution(incident.id)  # delivered by the alert intake
            except Exception as exc:
                if not prefect_away(exc):
                    raise
                resolution = None  # Prefect away (restarting, busy): not known to be resolved yet; asked again next round
            if resolution is not None:
                incident.record("alert.resolved", f"{alert_summary(resolution)} resolved", step=step.id, actor="alert",
                                ends_at=str(resolution.get("ends_at") or ""))
                return {"held": True, "by": "alert-resolved", "alert": resolution, "probes": probes}
        if step.probe is not None:
            probes += 1
            try:
                last = perform(step.probe, incident.context(), site=incident.site, drill=incident.drill)
                error = None
            except ActionFailed as exc:
                last, error = None, str(exc)
            if last is not None and incident.holds(step.until, result=last):
                return {"held": True, "by": "probe", "result": last, "probes": probes}
        if time.monotonic() >= deadline:
            raise CheckFailed(f"condition did not hold within {step.limit} (after {probes} probes)" + (f"; last error: {error}" if error else ""))
        if incident.sleep(min(interval, max(deadline - time.monotonic(), 0.01))):
            raise CheckFailed("the incident closed while the check was running")
