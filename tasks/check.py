"""Check steps: probe until a condition holds or the time limit passes."""

from __future__ import annotations

import time
from typing import Any

from tasks.action import ActionFailed, perform


class CheckFailed(Exception):
    pass


def alert_resolved(incident) -> dict | None:
    """The resolution delivered to this incident by the alert intake, if any."""
    from flows.launch import read_resolution

    return read_resolution(incident.id)


def check(incident, step) -> dict[str, Any]:
    deadline = time.monotonic() + incident.seconds(step.limit)
    interval = max(incident.seconds(step.interval), 0.05)
    probes, last, error = 0, None, None
    while True:
        if step.alert_resolved:
            resolution = alert_resolved(incident)
            if resolution is not None:
                summary = resolution.get("summary") or resolution.get("labels", {}).get("alertname", "alert")
                incident.record("alert.resolved", f"{summary} resolved", step=step.id, actor="alert",
                                ends_at=str(resolution.get("ends_at") or resolution.get("endsAt") or ""))
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
