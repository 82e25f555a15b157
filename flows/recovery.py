"""Getting incidents going again: after a lost worker, and while their waits are suspended.

`recover_run(id)` puts a run whose process is gone (Crashed, or left Running /
Pending / Paused by a worker that was killed) back to Scheduled; a worker then
runs it from the top: finished steps come back Cached (tasks/steps.py: step_task) and
the answers it already got replay (tasks/people.py: replay).

`watch(...)` is the escalation watcher. A suspended wait has no process that
could page the next tier or notice the expiry, so the watcher reads the wait's
`who` record (tier times, what was paged, expiry time) and, when something is
due, wakes the run: for an expiry it first writes the explicit marker
`suspended-<step>-<n>-expired`, which the replaying run takes as the step's expiry; for a
tier the woken run pages it itself (with the incident's directory, drill rules
and channels) and suspends again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.states import Scheduled

from tasks.inputs import base_of, mark_expired, read_json, who_key

log = logging.getLogger("runbook.recovery")

RECOVERABLE = {StateType.CRASHED, StateType.RUNNING, StateType.PENDING, StateType.PAUSED, StateType.FAILED}


class NotRecoverable(Exception):
    pass


def recover_run(flow_run_id: UUID | str, *, why: str = "recovered by hand") -> str:
    """Reschedule a run whose process is gone; returns the state it left. The caller vouches that no process runs it."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(str(flow_run_id)))
        if run.deployment_id is None:
            raise NotRecoverable("the run has no deployment, so no worker can run it again; start the runbook anew")
        if run.state is None or run.state.type not in RECOVERABLE:
            raise NotRecoverable(f"the run is {run.state.name if run.state else 'without state'}; only a crashed, failed, "
                                 "or orphaned running, pending or paused run is recovered")
        left = run.state.name
        client.set_flow_run_state(run.id, Scheduled(name="Recovering", message=why), force=True)
    return left


def due(who: dict, now: datetime) -> str | None:
    """'expired', 'tier N' or None: what a suspended wait needs now."""
    if who.get("expires_at") and now >= datetime.fromisoformat(who["expires_at"]):
        return "expired"
    paged = set(who.get("paged", []))
    for index, tier in enumerate(who.get("tiers", [])):
        if index not in paged and now >= datetime.fromisoformat(tier["at"]):
            return f"tier {index + 1}"
    return None


def wake_due(client, now: datetime | None = None) -> list[tuple[str, str]]:
    """One pass over the suspended runs; wakes those with something due. Returns [(run id, reason)]."""
    now = now or datetime.now(timezone.utc)
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    woken = []
    for run in client.read_flow_runs(flow_run_filter=paused, limit=200):  # the API caps a page at 200
        details = run.state.state_details
        if not details.pause_reschedule or not details.run_input_keyset:
            continue  # a blocking pause escalates in its own process
        who = read_json(client, run.id, who_key(details.run_input_keyset))
        if who is None:
            continue
        reason = due(who, now)
        if reason is None:
            continue
        if reason == "expired":
            mark_expired(client, run.id, base_of(details.run_input_keyset), f"no answer by {who['expires_at']}")
        result = client.set_flow_run_state(run.id, Scheduled(name="Resuming", message=f"escalation watcher: {reason}"))
        if result.status.value == "ACCEPT":
            woken.append((str(run.id), reason))
            log.info("woke %s (%s, step %s): %s", run.name, who.get("runbook"), who.get("step"), reason)
    return woken


def watch(poll_seconds: float = 5.0) -> None:
    """The escalation watcher's loop (`python -m app.stack watcher`); several may run, a wake is idempotent."""
    while True:
        try:
            with get_client(sync_client=True) as client:
                wake_due(client)
        except Exception:  # Prefect restarting: try again next round
            log.exception("escalation watcher pass failed")
        time.sleep(poll_seconds)
