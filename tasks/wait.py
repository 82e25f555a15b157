"""Wait steps: let time pass (scaled in drills) unless the incident closes."""

from __future__ import annotations


def wait(incident, seconds: float) -> dict:
    incident.sleep(seconds)
    return {"waited_seconds": round(seconds, 3)}
