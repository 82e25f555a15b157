"""The escalation watcher: the timers of suspended waits, kept with no process of their incident alive.

`watch(...)` is its loop (`python -m app.stack watcher`; several may run). Each pass reads every
waiting incident, paging through the API, and then heals the crashed and the dead (flows/recovery.py).

A suspended wait has no process that could keep its clock, so when it suspended the run wrote
everything time-based still to come into the wait's `who` record: the escalation tiers, the next
reminder, the expiry, and the incident's thresholds and deadlines (`timers`). A due tier the watcher
pages itself (no process, no concurrency slot). When anything else is due and not yet done (its
claim, `once-<name>`, is not on the run), the watcher wakes the run: the woken run replays its
answers and finished steps, fires what is due (each once, by its claim), records it on the journal,
and suspends again with what is left. An expiry is first marked explicitly
(`suspended-<step>-<n>-expired`), which the replaying run takes as the step's expiry.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled

from flows.lanes import LANES, Lanes, side_by_side
from flows.recovery import NotRecoverable, declare_dead, detached, heal_crashed, mine, runs_in, silence_limit
from tasks.client import sync_client
from tasks.inputs import base_of, mark_expired, next_due, put_input, read_input, read_json, who_key
from tasks.tiers import page_tier, reminder_timer

log = logging.getLogger("runbook.escalation")


def due(who: dict, now: datetime, done=lambda claim: False) -> str | None:
    """'expired', a timer's name, or None: why a suspended wait must be woken now. `done(claim)` says a timer fired."""
    if who.get("expires_at") and now >= datetime.fromisoformat(who["expires_at"]):
        return "expired"
    for timer in who.get("timers", []):
        if timer.get("claim") and now >= datetime.fromisoformat(timer["at"]) and not done(timer["claim"]):
            return timer["what"]
    return None


def wake_due(client, now: datetime | None = None, lanes: int | "Lanes" = LANES,
             ahead: Lanes | None = None) -> list[tuple[str, str]]:
    """One pass over the suspended runs; pages their due tiers and wakes those with anything else due.
    Returns [(run id, reason)] of the runs woken.

    The runs with something due are looked after on up to `lanes` threads side by side, each with a client
    of its own: each due tier is a few server calls and a page, so one after the other, 250 incidents whose
    tiers come due together would be paged over a minute. Each tier is still paged once (its claim).
    Given `Lanes` (the watcher's loop), the pass hands them its runs and returns without waiting for them: the
    next pass, a second later, hands over what has come due since (returning the wakes finished meanwhile).
    Given `ahead` too, the records of the waits whose first timer comes due within AHEAD_SECONDS are read there
    beforehand, so that when it is due a tier is a claim and a page, not a read first."""
    if isinstance(lanes, Lanes) and lanes.backlog() > 0:
        return [w for w in lanes.finished() if w is not None]  # every lane has work waiting: reading the runs can wait
    now = now or datetime.now(timezone.utc)
    paused = runs_in(client, StateType.PAUSED)
    for gone in (set(_next_look.copy()) | set(_read_ahead.copy())) - {run.id for run in paused}:  # woken, answered or
        _next_look.pop(gone, None)  # ended since (copies: the lanes add)
        _read_ahead.pop(gone, None)
    waiting = [run for run in paused if _suspended_here(run)]
    todo = [run for run in waiting if _something_due(run, now)]
    if isinstance(lanes, Lanes):
        for run in todo:
            lanes.submit(run, lambda own, run: _look_after(own, run, datetime.now(timezone.utc)))
        found = lanes.finished()
        if ahead is not None:
            handed = {run.id for run in todo}
            for run in waiting:
                if run.id not in handed and _due_soon(run, now):
                    ahead.submit(run, _read_record)
            ahead.finished()
    elif lanes <= 1 or len(todo) <= 1:
        found = [_look_after(client, run, now) for run in todo]
    else:
        found = side_by_side(todo, lanes, lambda own, run: _look_after(own, run, now))
    return [w for w in found if w is not None]


# When each suspended wait next needs a look, by run id, as this watcher last read its record in that state:
# (state id, time or None for nothing more). The state's message names only the first timer, so without this a
# wait whose first tier was paged would have its record read at every pass until it is woken.
_next_look: dict[UUID, tuple[UUID, datetime | None]] = {}


def next_look(who: dict, now: datetime) -> datetime | None:
    """The earliest time still to come in a wait's record: a tier not paged, a timer, the expiry; None if none."""
    paged = set(who.get("paged", []))
    times = [t["at"] for i, t in enumerate(who.get("tiers", [])) if i not in paged]
    times += [t["at"] for t in who.get("timers", [])] + ([who["expires_at"]] if who.get("expires_at") else [])
    later = [at for at in map(datetime.fromisoformat, times) if at > now]
    return min(later, default=None)


# The records of waits as this watcher last had them, read ahead of their first timer or when it looked, by run id:
# (state id, record). A record changes with its run's state (a new wait); within one state a watcher pages tiers
# (each tier's claim says it was paged, whoever looks) and moves the reminder, here in the record it keeps.
_read_ahead: dict[UUID, tuple[UUID, dict]] = {}
AHEAD_SECONDS = 30.0


def _suspended_here(run: FlowRun) -> bool:
    """Whether a paused run is a suspended wait (its process gone) of an incident whose runbook this watcher has.
    A blocking pause escalates in its own process."""
    details = run.state.state_details
    return bool(details.pause_reschedule and details.run_input_keyset) and mine(run)


def _due_soon(run: FlowRun, now: datetime) -> bool:
    """Whether a suspended wait has its next timer within AHEAD_SECONDS and its record not yet read ahead."""
    if _read_ahead.get(run.id, (None,))[0] == run.state.id:
        return False
    looked = _next_look.get(run.id)
    first = looked[1] if looked is not None and looked[0] == run.state.id else next_due(run.state.message)
    return first is not None and now < first <= now + timedelta(seconds=AHEAD_SECONDS)


def _read_record(client, run: FlowRun) -> None:
    who = read_json(client, run.id, who_key(run.state.state_details.run_input_keyset))
    if who is not None and _read_ahead.setdefault(run.id, (run.state.id, who))[0] != run.state.id:
        _read_ahead[run.id] = (run.state.id, who)  # a new wait's (a lane that looked meanwhile keeps its own)


def _something_due(run: FlowRun, now: datetime) -> bool:
    """Whether a suspended wait's next timer (as this watcher last saw its record, else its state message) is due."""
    looked = _next_look.get(run.id)
    if looked is not None and looked[0] == run.state.id:
        return looked[1] is not None and now >= looked[1]
    first = next_due(run.state.message)
    return not (first is not None and first > now or run.state.message == "no timer")  # else its record need not be read


def _look_after(client, run: FlowRun, now: datetime) -> tuple[str, str] | None:
    """Page a suspended run's due tiers; wake it when anything else is due: (run id, reason) when woken."""
    details = run.state.state_details
    read = _read_ahead.get(run.id)
    if read is not None and read[0] == run.state.id:
        who = read[1]
    else:
        who = read_json(client, run.id, who_key(details.run_input_keyset))
        if who is None:
            return None
        _read_ahead[run.id] = (run.state.id, who)  # the tiers paged and the reminder moved below are kept in it
    try:
        page_due_tiers(client, run, who, now)
    except NotRecoverable as exc:  # one broken runbook does not hold up the other incidents' timers
        log.error("cannot page the due tiers of %s: %s", run.name, exc)
        return None
    reason = due(who, now, lambda claim: read_input(client, run.id, f"once-{claim}") is not None)
    if reason is None:
        _next_look[run.id] = (run.state.id, next_look(who, now))
        return None
    if client.read_flow_run(run.id).state.id != run.state.id:
        return None  # woken or answered since the pass read it (the lanes work on while the next pass reads): not twice
    if reason == "expired":
        mark_expired(client, run.id, base_of(details.run_input_keyset), f"no answer by {who['expires_at']}")
    result = client.set_flow_run_state(run.id, Scheduled(name="Resuming", message=f"escalation watcher: {reason}"))
    if result.status.value != "ACCEPT":
        return None
    log.info("woke %s (%s, step %s): %s", run.name, who.get("runbook"), who.get("step"), reason)
    return str(run.id), reason


def page_due_tiers(client, run: FlowRun, who: dict, now: datetime) -> None:
    """Page the escalation tiers that are due, here: no process, no concurrency slot, no wait behind new incidents."""
    paged = set(who.get("paged", []))
    due_tiers = [(i, t) for i, t in enumerate(who.get("tiers", [])) if i not in paged and now >= datetime.fromisoformat(t["at"])]
    if not due_tiers or "text" not in due_tiers[0][1]:
        return
    if client.read_flow_run(run.id).state.id != run.state.id:
        return  # answered or woken since the pass read it: a page now would ask for what may be done
    incident = detached(run)
    sent = []
    for index, tier in due_tiers:
        if page_tier(incident, who["step"], who.get("kind", "manual"), who["wait_key"], index, tier["roles"], tier["text"],
                     tier.get("plan_seconds", 0)):
            sent.append(index)
        paged.add(index)
    reminds = _remind_from(who, now)
    who.update(paged=sorted(paged), last_page=now.isoformat())
    if reminds:  # else the record stays as it is: each tier's claim says it was paged, to all who look
        put_input(client, run.id, who_key(run.state.state_details.run_input_keyset), json.dumps(who, ensure_ascii=False),
                  exists=True)
    if sent:
        log.info("paged %s of %s (%s, step %s)", ", ".join(f"tier {i + 1}" for i in sent), run.name, who.get("runbook"),
                 who.get("step"))


def _remind_from(who: dict, now: datetime) -> bool:
    """A wait that reminds counts its next reminder from this page: True when its record's reminder moved (and the
    record must be written again, for the next pass, another watcher, and the run when it resumes)."""
    timers = who.get("timers", [])
    old = next((t for t in timers if t.get("what") == "reminder"), None)
    every = who.get("remind_every")
    if every is None and old is not None and who.get("last_page"):  # a record written before it said how often
        every = (datetime.fromisoformat(old["at"]) - datetime.fromisoformat(who["last_page"])).total_seconds()
    if not every or every <= 0 or not who.get("waiting_since"):
        return False
    new = reminder_timer(who["step"], datetime.fromisoformat(who["waiting_since"]).timestamp(), now.timestamp(), every)
    who["timers"] = [t for t in timers if t is not old] + [new]
    return True


def watch(poll_seconds: float = 5.0) -> None:
    """The escalation watcher's loop; several may run at once (a wake is idempotent, each timer fires once)."""
    log.info("escalation watcher started: a pass every %g s; a running incident silent for %s s is dead",
             poll_seconds, silence_limit())
    reachable_since = last_judged = time.monotonic()
    lanes, ahead = Lanes(), Lanes(1, name="watcher-ahead")
    while True:
        started = time.monotonic()
        try:
            with sync_client() as client:
                woken = wake_due(client, lanes=lanes, ahead=ahead)
                # heartbeats sent while Prefect was away are lost: judge silence only a limit after it answered again.
                # A pass that failed says it was away; so does a long gap since the last judgement (a request in
                # flight when Prefect went away hangs until it is back, in this pass or the one before).
                now, limit = time.monotonic(), silence_limit() or 0
                if now - last_judged > poll_seconds + limit / 4:
                    log.warning("%.0f s since the last pass judged silence: Prefect may have been away; running "
                                "incidents are judged again %g s from now", now - last_judged, limit)
                    reachable_since = now
                last_judged = now
                dead = declare_dead(client) if now - reachable_since >= limit else []
                healed = heal_crashed(client)
            log.info("pass done in %.2f s: %d woken, %d dead, %d recovered; %d waits in hand", time.monotonic() - started,
                     len(woken), len(dead), len(healed), lanes.in_hand())
        except Exception:  # Prefect restarting: try again next round
            log.exception("escalation watcher pass failed")
            reachable_since = last_judged = time.monotonic()
        time.sleep(poll_seconds)
