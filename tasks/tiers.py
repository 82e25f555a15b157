"""A wait's escalation: its tiers, paged once each whoever gets there first (the waiting run, or the escalation
watcher while the run is suspended), and its reminders; the names of their claims and the times they keep."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from runbooks.durations import human
from tasks.client import sync_client
from tasks.forms import options
from tasks.incident import Incident
from tasks.inputs import inputs_under, pause_key

logger = logging.getLogger("runbook.tiers")


def wait_key(step_id: str, started: float) -> str:
    """One wait of one step (a step may wait again later: a repeat, a retry): names the claims of its tiers."""
    return f"{step_id}-{int(started)}"


def page_tier(incident: Incident, step_id: str, kind: str, key: str, index: int, roles: list[str], text: str,
              plan_seconds: float) -> bool:
    """Page one escalation tier of a wait, once whoever gets there first (the waiting run, or the watcher while it
    is suspended: tiers need no process of the incident, nor one of its runbook's concurrency slots)."""
    if not incident.claim(f"tier-{key}-{index + 1}"):
        return False
    incident.record("escalation.tier", f"no answer after {human(plan_seconds)}: paging {', '.join(roles)}",
                    step=step_id, tier=index + 1, roles=roles)
    incident.page(roles, text, step=step_id, answer_options=options(kind))
    return True


def reminder_timer(step_id: str, started: float, last_page: float, every: float) -> dict:
    """A wait's next reminder (times in epoch seconds): `every` after the last page, claimed once per period of the
    wait, so one reminder goes out whichever attempt of the run, or watcher, gets to it."""
    at = last_page + every
    return {"what": "reminder", "at": at_text(at), "claim": f"reminder-{pause_key(step_id, int((at - started) // every))}"}


def at_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def paged_meanwhile(run_id, key: str, tiers: int, paged: set[int], last_page: float) -> float:
    """Add to `paged` the tiers the escalation watcher paged while the run was suspended (their claims, `once-tier-
    <wait>-<n>`: the watcher does not write the wait's record again for them) and return the last page's time."""
    try:
        with sync_client() as client:
            claims = inputs_under(client, run_id, f"once-tier-{key}-")
    except Exception as exc:  # noqa: BLE001  (each tier's own claim still keeps it from going out twice)
        logger.warning("could not read which tiers were paged while suspended: %s", exc)
        return last_page
    for name, at in claims.items():
        number = name.rpartition("-")[2]
        if number.isdigit() and 0 < int(number) <= tiers:
            paged.add(int(number) - 1)
            try:
                last_page = max(last_page, epoch(at))
            except ValueError:
                pass
    return last_page
