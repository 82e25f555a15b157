"""Keeping incidents going when their process died: crashed runs, and runs whose machine died.

The escalation watcher (flows/escalation.py: watch) calls these every pass, besides looking after the
suspended waits:

- A run whose process died (Crashed) is set going again (Scheduled "Recovering"): the run
  replays its answers and finished steps, up to `max_recoveries` times; each recovery is on
  the journal, and after the last one the runbook's lead is paged instead.
- A run whose machine died says nothing: it stays Running (or Pending) with nobody behind
  it. Flow runs send a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds;
  a run silent for `dead_after_seconds` is marked Crashed ("no heartbeat for ...") and
  then healed as above, in the same pass.

Each state a watcher acts on is claimed first (`once-heal-<state id>`, saying which watcher and
when), so of several watchers that read the same dead or crashed run only one sets it going again.
A watcher whose heal failed half way (Prefect answering 503 while it catches up) finishes it on its
next pass; a claim left by a watcher that died is taken over after CLAIM_HELD seconds. A watcher
looks after the incidents of the runbooks in its own RUNBOOK_RUNBOOKS_DIR only: another
stack's incidents on the same Prefect server are that stack's watcher's to heal.

`recover_run(id)` does the same by hand (`runbook recover`) for a run whose process is
gone, Crashed or left Running/Pending/Paused by a machine that died: finished steps come
back Cached (tasks/steps.py: step_task) and the answers replay (tasks/people.py: replay).
"""
from __future__ import annotations

import json
import logging
import uuid
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

from integrations.contacts import load_directory
from integrations.site import load_site
from runbooks.loader import RunbookError, load_current
from runbooks.settings import get_settings
from tasks.client import sync_client
from tasks.incident import Incident, plan_clock, run_url, runbook_of
from tasks.inputs import create_once, inputs_under

log = logging.getLogger("runbook.recovery")

RECOVERABLE = {StateType.CRASHED, StateType.RUNNING, StateType.PENDING, StateType.PAUSED, StateType.FAILED}
PAGE = 200  # the API's largest page of flow runs
WATCHER = uuid.uuid4().hex  # this watcher, in the claims it holds
# Seconds after which a claim whose heal never finished is taken as its watcher's death: well past the ~62 s a
# Prefect client retries one request that Prefect answers 503 (its holder may still be in that request).
CLAIM_HELD = 180.0


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


def heal_crashed(client) -> list[tuple[str, str]]:
    """Set every crashed incident going again, up to `max_recoveries` times each; then page its lead, once."""
    limit = get_settings().max_recoveries
    healed = []
    for run in runs_in(client, StateType.CRASHED, deployed=True):
        if not mine(run):
            continue
        recoveries = inputs_under(client, run.id, "once-recovery-")
        if "once-recovery-gave-up" in recoveries:
            continue
        try:
            incident = detached(run)  # before the run is touched: a runbook that does not load is reported, not half healed
        except NotRecoverable as exc:
            log.error("cannot heal %s: %s", run.name, exc)
            continue
        if not _take(client, run):
            continue  # another watcher has this crash in hand
        now = client.read_flow_run(run.id).state  # read a pass ago: a watcher it took the crash over from may have healed it
        if now is None or now.id != run.state.id:
            continue
        attempt = _attempt(client, run, inputs_under(client, run.id, "once-recovery-"), limit)
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
                if mine(run) and run.state.timestamp < since and not run.state.state_details.pause_reschedule]
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


def mine(run: FlowRun) -> bool:
    """An incident's own run whose runbook this watcher has (in its RUNBOOK_RUNBOOKS_DIR)."""
    return _incident(run) and _runbook_file(run).is_file()


def _take(client, run: FlowRun) -> bool:
    """Claim the run's present state for this watcher; False when another watcher has it in hand.

    True again for the watcher that holds the claim (its heal failed half way and is tried again), and for a
    watcher that takes over a claim held for CLAIM_HELD s (its watcher died holding it): a numbered claim
    after it, created once, so of several watchers that find it old only one takes it over."""
    key = f"once-heal-{run.state.id}"
    mine_now = json.dumps({"by": WATCHER, "at": _now()})
    if create_once(client, run.id, key, mine_now):
        return True
    claims = inputs_under(client, run.id, key)
    if not claims:
        return False  # it was there a moment ago and is not now: the next pass reads it again
    latest = max(claims, key=lambda k: _claim_number(k, key))
    holder, n = _holder(claims[latest]), _claim_number(latest, key)
    if holder.get("by") == WATCHER:
        return True
    held = datetime.now(timezone.utc) - datetime.fromisoformat(holder["at"])
    return held.total_seconds() > CLAIM_HELD and create_once(client, run.id, f"{key}-r{n + 1}", mine_now)


def _claim_number(key: str, base: str) -> int:
    return 1 if key == base else int(key.removeprefix(f"{base}-r"))


def _holder(value: str) -> dict:
    """A claim's value read as a dict: a heal's {"by", "at"}, a recovery's {"at", "state"} (a claim written
    before it said more: a plain time, nobody's)."""
    try:
        holder = json.loads(value)
    except ValueError:
        holder = None
    return holder if isinstance(holder, dict) else {"by": None, "at": value}


def _attempt(client, run: FlowRun, recoveries: dict[str, str], limit: int) -> int | None:
    """This crash's recovery number: the one already counted for it (a heal tried again), else the next,
    claimed once; None when `limit` are used up."""
    state = str(run.state.id)
    for key, value in recoveries.items():
        if key.removeprefix("once-recovery-").isdigit() and _holder(value).get("state") == state:
            return int(key.removeprefix("once-recovery-"))
    claim = json.dumps({"at": _now(), "state": state})
    return next((n for n in range(1, limit + 1)
                 if f"once-recovery-{n}" not in recoveries and create_once(client, run.id, f"once-recovery-{n}", claim)),
                None)


def _give_up(inc: Incident, run: FlowRun, limit: int) -> None:
    text = (f"事件已崩溃 {limit} 次，不再自动恢复，请人工处理 / The incident crashed {limit} times and is no longer "
            f"restarted by itself; look at it and use `runbook recover {run.id}` when it can go on.")
    inc.record("incident.recovery-stopped", text, actor="watcher", recoveries=limit)
    inc.page([inc.runbook.lead], text, step=None)
    log.warning("gave up on %s after %d recoveries; paged %s", run.name, limit, inc.runbook.lead)


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


