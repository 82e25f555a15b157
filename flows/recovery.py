"""Keeping incidents going with no process of theirs alive: timers of suspended waits, and crashed runs.

`watch(...)` is the escalation watcher (`python -m app.stack watcher`; several may run).
Each pass reads every waiting incident, paging through the API:

- A suspended wait has no process that could keep its clock, so when it suspended the
  run wrote everything time-based still to come into the wait's `who` record: the
  escalation tiers, the next reminder, the expiry, and the incident's thresholds and
  deadlines (`timers`). When one is due and not yet done (its claim, `once-<name>`, is
  not on the run), the watcher wakes the run: the woken run replays its answers and
  finished steps, fires what is due (each once, by its claim), records it on the
  journal, and suspends again with what is left. An expiry is first marked explicitly
  (`suspended-<step>-<n>-expired`), which the replaying run takes as the step's expiry.
- A run whose process died (Crashed) is set going again (Scheduled "Recovering") the
  same way, up to `max_recoveries` times; each recovery is on the journal, and after
  the last one the runbook's lead is paged instead.
- A run whose machine died says nothing: it stays Running (or Pending) with nobody behind
  it. Flow runs send a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds;
  a run silent for `dead_after_seconds` is marked Crashed ("no heartbeat for ...") and
  then healed as above, in the same pass.

Each state a watcher acts on is claimed first (`once-heal-<state id>`), so of several
watchers that read the same dead or crashed run only one sets it going again. A watcher
looks after the incidents of the runbooks in its own RUNBOOK_RUNBOOKS_DIR only: another
stack's incidents on the same Prefect server are that stack's watcher's to heal.

`recover_run(id)` does the same by hand (`runbook recover`) for a run whose process is
gone, Crashed or left Running/Pending/Paused by a machine that died: finished steps come
back Cached (tasks/steps.py: step_task) and the answers replay (tasks/people.py: replay).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from uuid import UUID

from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState,
                                            FlowRunFilterStateName, FlowRunFilterStateType)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.settings import get_current_settings
from prefect.states import Crashed, Scheduled

from flows.lanes import LANES, Lanes, side_by_side
from integrations.contacts import load_directory
from integrations.site import load_site
from runbooks.loader import RunbookError, load_current
from runbooks.settings import get_settings
from tasks.client import sync_client
from tasks.incident import Incident, plan_clock, run_url, runbook_of
from tasks.inputs import base_of, create_once, mark_expired, next_due, put_input, read_input, read_json, who_key
from tasks.people import page_tier, reminder_timer

log = logging.getLogger("runbook.recovery")

RECOVERABLE = {StateType.CRASHED, StateType.RUNNING, StateType.PENDING, StateType.PAUSED, StateType.FAILED}
PAGE = 200  # the API's largest page of flow runs


class NotRecoverable(Exception):
    pass


def recover_run(flow_run_id: UUID | str, *, why: str = "recovered by hand") -> str:
    """Reschedule a run whose process is gone; returns the state it left. The caller vouches that no process runs it."""
    with sync_client() as client:
        run = client.read_flow_run(UUID(str(flow_run_id)))
        if run.deployment_id is None:
            raise NotRecoverable("the run has no deployment, so no worker can run it again; start the runbook anew")
        if run.state is None or run.state.type not in RECOVERABLE:
            raise NotRecoverable(f"the run is {run.state.name if run.state else 'without state'}; only a crashed, failed, "
                                 "or orphaned running, pending or paused run is recovered")
        left = run.state.name
        client.set_flow_run_state(run.id, Scheduled(name="Recovering", message=why), force=True)
    return left


def runs_in(client, *types: StateType, deployed: bool = False, names: list[str] | None = None) -> list[FlowRun]:
    """Every flow run in these states (of these state names, if given), read page by page (a single read stops at
    200) before any is acted on."""
    return list(_pages(client, types, deployed, names))


def _pages(client, types, deployed: bool, names: list[str] | None = None) -> Iterator[FlowRun]:
    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)),
                                                 name=FlowRunFilterStateName(any_=names) if names else None),
                        deployment_id=FlowRunFilterDeploymentId(is_null_=False) if deployed else None)
    offset = 0
    while True:
        page = client.read_flow_runs(flow_run_filter=flt, limit=PAGE, offset=offset, sort=FlowRunSort.ID_DESC)
        yield from page
        if len(page) < PAGE:
            return
        offset += len(page)


def due(who: dict, now: datetime, done=lambda claim: False) -> str | None:
    """'expired', a timer's name, or None: why a suspended wait must be woken now. `done(claim)` says a timer fired."""
    if who.get("expires_at") and now >= datetime.fromisoformat(who["expires_at"]):
        return "expired"
    for timer in who.get("timers", []):
        if timer.get("claim") and now >= datetime.fromisoformat(timer["at"]) and not done(timer["claim"]):
            return timer["what"]
    return None


def wake_due(client, now: datetime | None = None, lanes: int | "Lanes" = LANES) -> list[tuple[str, str]]:
    """One pass over the suspended runs; pages their due tiers and wakes those with anything else due.
    Returns [(run id, reason)] of the runs woken.

    The runs with something due are looked after on up to `lanes` threads side by side, each with a client
    of its own: each due tier is a few server calls and a page, so one after the other, 250 incidents whose
    tiers come due together would be paged over a minute. Each tier is still paged once (its claim).
    Given `Lanes` (the watcher's loop), the pass hands them its runs and returns without waiting for them: the
    next pass, a second later, hands over what has come due since (returning the wakes finished meanwhile)."""
    if isinstance(lanes, Lanes) and lanes.backlog() > 0:
        return [w for w in lanes.finished() if w is not None]  # every lane has work waiting: reading the runs can wait
    now = now or datetime.now(timezone.utc)
    paused = runs_in(client, StateType.PAUSED)
    for gone in set(_next_look.copy()) - {run.id for run in paused}:  # woken, answered or ended since (a copy: lanes add)
        _next_look.pop(gone, None)
    todo = [run for run in paused if _something_due(run, now)]
    if isinstance(lanes, Lanes):
        for run in todo:
            lanes.submit(run, lambda own, run: _look_after(own, run, datetime.now(timezone.utc)))
        found = lanes.finished()
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


def _something_due(run: FlowRun, now: datetime) -> bool:
    """Whether a paused run is a suspended wait of ours whose first timer (in its state message) is due."""
    details = run.state.state_details
    if not details.pause_reschedule or not details.run_input_keyset or not _mine(run):
        return False  # a blocking pause escalates in its own process
    looked = _next_look.get(run.id)
    if looked is not None and looked[0] == run.state.id:
        return looked[1] is not None and now >= looked[1]
    first = next_due(run.state.message)
    return not (first is not None and first > now or run.state.message == "no timer")  # else its record need not be read


def _look_after(client, run: FlowRun, now: datetime) -> tuple[str, str] | None:
    """Page a suspended run's due tiers; wake it when anything else is due: (run id, reason) when woken."""
    details = run.state.state_details
    who = read_json(client, run.id, who_key(details.run_input_keyset))
    if who is None:
        return None
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
    incident = detached(run)
    for index, tier in due_tiers:
        page_tier(incident, who["step"], who.get("kind", "manual"), who["wait_key"], index, tier["roles"], tier["text"],
                  tier.get("plan_seconds", 0))
        paged.add(index)
    reminds = _remind_from(who, now)
    who.update(paged=sorted(paged), last_page=now.isoformat())
    if reminds:  # else the record stays as it is: each tier's claim says it was paged, to all who look
        put_input(client, run.id, who_key(run.state.state_details.run_input_keyset), json.dumps(who, ensure_ascii=False),
                  exists=True)
    log.info("paged %s of %s (%s, step %s)", ", ".join(f"tier {i + 1}" for i, _ in due_tiers), run.name,
             who.get("runbook"), who.get("step"))


def heal_crashed(client) -> list[tuple[str, str]]:
    """Set every crashed incident going again, up to `max_recoveries` times each; then page its lead, once."""
    limit = get_settings().max_recoveries
    healed = []
    for run in runs_in(client, StateType.CRASHED, deployed=True):
        if not _mine(run) or read_input(client, run.id, "once-recovery-gave-up") is not None:
            continue
        try:
            incident = detached(run)  # before the run is touched: a runbook that does not load is reported, not half healed
        except NotRecoverable as exc:
            log.error("cannot heal %s: %s", run.name, exc)
            continue
        if not _take(client, run):
            continue  # another watcher has this crash in hand
        attempt = next((n for n in range(1, limit + 1) if create_once(client, run.id, f"once-recovery-{n}", _now())), None)
        if attempt is None:
            if create_once(client, run.id, "once-recovery-gave-up", _now()):
                _give_up(incident, run, limit)
            continue
        result = client.set_flow_run_state(run.id, Scheduled(name="Recovering", message=f"crashed; recovery {attempt} of {limit}"),
                                           force=True)
        if result.status.value == "ACCEPT":
            healed.append((str(run.id), f"recovery {attempt}"))
            incident.record("incident.recovered", f"its process died ({run.state.message or 'crashed'}); started again, "
                                 f"recovery {attempt} of {limit}", actor="watcher", attempt=attempt)
            log.info("recovered %s (crashed): attempt %d of %d", run.name, attempt, limit)
    return healed


def declare_dead(client, now: datetime | None = None) -> list[tuple[str, str]]:
    """Mark Crashed every incident whose machine died: Running, or Paused in its process (a blocking wait,
    RUNBOOK_SUSPEND_WAITS=false), with no heartbeat, or Pending, for `silence_limit()` s.

    Returns [(run id, why)]; `heal_crashed` then sets them going again like any crashed run. A suspended wait has
    no process to lose: it is left to `wake_due`.
    """
    limit = silence_limit()
    if limit is None:
        return []  # flow runs send no heartbeats: silence says nothing
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(seconds=limit)
    # a blocking wait's state is named "Paused" (tasks/people.py pause_run): the suspended ones are not read again here
    candidates = (runs_in(client, StateType.RUNNING, StateType.PENDING, deployed=True)
                  + runs_in(client, StateType.PAUSED, deployed=True, names=["Paused"]))
    suspects = [run for run in candidates
                if _mine(run) and run.state.timestamp < since and not run.state.state_details.pause_reschedule]
    # a process sends heartbeats while it runs, and while it waits paused inside the run
    alive = heartbeating(client, [run.id for run in suspects if run.state.type != StateType.PENDING], since)
    dead = []
    for run in suspects:
        if run.id in alive or not _take(client, run):
            continue
        why = (f"pending for {(now - run.state.timestamp).total_seconds():.0f} s with no process"
               if run.state.type == StateType.PENDING else
               f"no heartbeat for over {limit:g} s" + (" while it waited in its process" if run.state.type == StateType.PAUSED else ""))
        why += ": its machine is taken as dead"
        # not forced: a run that finished meanwhile (its heartbeat late, not lost) keeps its final state
        if client.set_flow_run_state(run.id, Crashed(message=why)).status.value == "ACCEPT":
            dead.append((str(run.id), why))
            log.warning("%s (%s) was %s: %s", run.name, run.id, run.state.name, why)
    return dead


def silence_limit() -> float | None:
    """Seconds without a heartbeat after which a running incident is dead; None when flow runs send none.

    At least 1.5 periods of this process's PREFECT_FLOWS_HEARTBEAT_FREQUENCY (the workers' own must be
    the same), so a watcher set up for Prefect's default of 180 s never takes a live run for dead.
    """
    period = get_current_settings().flows.heartbeat_frequency
    return None if period is None else max(get_settings().dead_after_seconds, 1.5 * period)


def heartbeating(client, run_ids: list[UUID], since: datetime) -> set[UUID]:
    """Of these flow runs, those that sent a heartbeat since then (`prefect.flow-run.heartbeat` events)."""
    alive: set[UUID] = set()
    for start in range(0, len(run_ids), PAGE):
        flt = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]), occurred=EventOccurredFilter(since=since),
                          resource=EventResourceFilter(id=[f"prefect.flow-run.{i}" for i in run_ids[start:start + PAGE]],
                                                       distinct=True))
        page = client.read_events(filter=flt, limit=50)  # the server allows at most 50 a page
        while True:
            alive.update(UUID(e.resource.id.removeprefix("prefect.flow-run.")) for e in page.events)
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
    return alive


def _incident(run: FlowRun) -> bool:
    """An incident's own run (a track's child run comes back with its incident)."""
    return runbook_of(run.tags) is not None and not run.parent_task_run_id


def _runbook_file(run: FlowRun) -> Path:
    return get_settings().runbooks_dir / f"{runbook_of(run.tags)}.yaml"


def _mine(run: FlowRun) -> bool:
    """An incident's own run whose runbook this watcher has (in its RUNBOOK_RUNBOOKS_DIR)."""
    return _incident(run) and _runbook_file(run).is_file()


def _take(client, run: FlowRun) -> bool:
    """Claim the run's present state for this watcher; False when another watcher has it in hand."""
    return create_once(client, run.id, f"once-heal-{run.state.id}", _now())


def _give_up(inc: Incident, run: FlowRun, limit: int) -> None:
    text = (f"事件已崩溃 {limit} 次，不再自动恢复，请人工处理 / The incident crashed {limit} times and is no longer "
            f"restarted by itself; look at it and use `runbook recover {run.id}` when it can go on.")
    inc.record("incident.recovery-stopped", text, actor="watcher", recoveries=limit)
    inc.page([inc.runbook.lead], text, step=None)
    log.warning("gave up on %s after %d recoveries; paged %s", run.name, limit, inc.runbook.lead)


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


def detached(run: FlowRun) -> Incident:
    """The incident of a run, outside its process: enough to record on its journal and page its people."""
    settings = get_settings()
    params = run.parameters or {}
    try:
        runbook = load_current(_runbook_file(run))
    except (RunbookError, OSError) as exc:
        raise NotRecoverable(f"runbook {runbook_of(run.tags)} of run {run.id} does not load: {exc}") from None
    return Incident(runbook, params=params.get("parameters") or {}, severity=params.get("severity"),
                    drill=bool(params.get("drill")), time_scale=float(params.get("time_scale") or 1.0), auto=False,
                    answers={}, alert=params.get("alert"), flow_run_id=str(run.id), label=params.get("incident"),
                    directory=load_directory(settings.contacts_file), site=load_site(settings.site_file),
                    run_url=run_url(str(run.id)), started=run.start_time, clock=plan_clock(params.get("clock")))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def watch(poll_seconds: float = 5.0) -> None:
    """The escalation watcher's loop; several may run at once (a wake is idempotent, each timer fires once)."""
    log.info("escalation watcher started: a pass every %g s; a running incident silent for %s s is dead",
             poll_seconds, silence_limit())
    reachable_since = time.monotonic()
    lanes = Lanes()
    while True:
        started = time.monotonic()
        try:
            with sync_client() as client:
                woken = wake_due(client, lanes=lanes)
                # heartbeats sent while Prefect was away may come late: judge silence only after a limit's worth of passes
                dead = declare_dead(client) if started - reachable_since >= (silence_limit() or 0) else []
                healed = heal_crashed(client)
            log.info("pass done in %.2f s: %d woken, %d dead, %d recovered; %d waits in hand", time.monotonic() - started,
                     len(woken), len(dead), len(healed), lanes.in_hand())
        except Exception:  # Prefect restarting: try again next round
            log.exception("escalation watcher pass failed")
            reachable_since = time.monotonic()
        time.sleep(poll_seconds)
