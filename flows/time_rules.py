"""The incident's time rules: thresholds that fire while it is open, deadlines that must be met.

A watcher thread beside the main line fires each threshold once (claimed on the
flow run, so a restarted run does not fire it again) and settles each deadline:
met, met late, or missed (running its `on_miss` steps). Steps of a time rule run
as plain calls beside the main line (new task runs cannot start while it is paused).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import weakref
from datetime import datetime, timedelta, timezone
from typing import Callable

from integrations.localtime import local_time
from runbooks.durations import human
from runbooks.model import Deadline, Threshold
from runbooks.workdays import CHINA, add_working_days
from tasks.client import sync_client
from tasks.incident import NOT_MEETING, Incident, finish_on_record
from tasks.inputs import inputs_under
from tasks.steps import BESIDE, summary


logger = logging.getLogger("runbook.time")


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A thread that sees this run's Prefect context (logger, events, client)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread


def start_time(inc: Incident, start: str) -> datetime | None:
    if start == "incident":
        return inc.started
    if start.startswith("param:"):
        value = inc.params.get(start[6:])
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return inc.started
    if start.startswith("holds:"):
        return first_held(inc, start[6:].strip())
    return inc.finished_at.get(start[5:])


# When each `holds:` condition was first seen to hold, per incident (the watcher looks several times a second).
_first_held: "weakref.WeakKeyDictionary[Incident, dict[str, datetime]]" = weakref.WeakKeyDictionary()


def first_held(inc: Incident, condition: str) -> datetime | None:
    """When the condition was first seen to hold, by this attempt of the run or an earlier one (a resumed wait)."""
    seen = _first_held.setdefault(inc, {})
    if condition not in seen and inc.holds(condition):
        seen[condition] = inc.first_time(f"held-{hashlib.sha1(condition.encode()).hexdigest()[:12]}")
    return seen.get(condition)


# Set once the watcher has settled a deadline (met, or missed and on the journal), per incident and deadline.
_settled: "weakref.WeakKeyDictionary[Incident, dict[str, threading.Event]]" = weakref.WeakKeyDictionary()


def settled(inc: Incident, deadline_id: str) -> threading.Event:
    return _settled.setdefault(inc, {}).setdefault(deadline_id, threading.Event())


def missed_first(inc: Incident, step_id: str, wait: float = 10.0) -> None:
    """Before a step that meets a deadline starts: a deadline already passed is on the journal as missed.

    The watcher records it (a claim on the server, then the record) and the step waits for that, at most
    `wait` seconds: the journal says the report was late before it says the report began. The deadline's
    on_miss pages go on beside the step; the late report is not held back to say that it is late.
    A step an earlier attempt did is only replayed, and a miss an earlier attempt recorded is on the journal.
    """
    try:
        for dl in inc.runbook.deadlines:
            if dl.met_by != step_id or settled(inc, dl.id).is_set() or inc.done_before(step_id):
                continue
            if f"once-deadline-missed-{dl.id}" in (inc.inputs_at_start or {}):
                continue
            when = due(inc, dl)
            if when is not None and datetime.now(timezone.utc) >= when and inc.holds(dl.when):
                settled(inc, dl.id).wait(wait)
    except Exception as exc:  # the step is what matters: it starts whatever went wrong here
        logger.warning("could not tell whether %s starts after a deadline it meets (%s)", step_id, exc)


def recall_finishes(inc: Incident, inputs: dict[str, str]) -> None:
    """A later attempt: the steps its rules start from, are met or stopped by that an earlier attempt finished,
    at their first finish (`once-finished-<step>`, kept for a finish that is not skipped, failed, expired or rejected).

    The rules' watcher starts before the walk has replayed those steps; not knowing them, it would record as
    missed a deadline that was met, or fire a threshold that was stopped.
    """
    for step_id in inc.timed_steps:
        at = finish_on_record(inputs, step_id)
        if at is not None:
            inc.finished_at.setdefault(step_id, at)


def _recall_if_unknown(inc: Incident) -> None:
    """A later attempt whose read of the run's inputs failed as it began: the watcher reads the finishes itself."""
    if inc.first_attempt or inc.inputs_at_start is not None:
        return
    try:
        with sync_client() as client:
            recall_finishes(inc, inputs_under(client, inc.id, "once-finished-"))
    except Exception as exc:
        logger.warning("could not read which timed steps an earlier attempt finished (%s); the walk's replay tells", exc)


def end_of_calendar_day(start: datetime, days: int) -> datetime:
    """End of the `days`-th calendar day after `start`, China time (the day of `start` itself is day 0)."""
    day = start.astimezone(CHINA).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=CHINA)


def due(inc: Incident, rule: Threshold | Deadline) -> datetime | None:
    start = start_time(inc, rule.start)
    if start is None:
        return None
    # days on the calendar are counted on the plan's clock (a drill's, scaled), then turned back into real time
    if isinstance(rule, Deadline) and (rule.working_days or rule.calendar_days is not None):
        try:
            plan_start = inc.plan_time(start)
        except OverflowError:  # a start far from the run's, times a huge scale, is off the calendar: count from it
            plan_start = start
        if rule.working_days:
            return inc.real_time(add_working_days(plan_start, rule.working_days))
        return inc.real_time(end_of_calendar_day(plan_start, rule.calendar_days))
    span = rule.after if isinstance(rule, Threshold) else rule.within
    return start + span / inc.time_scale


def deadline_state(inc: Incident, dl: Deadline) -> str:
    kinds = {e.kind for e in inc.journal if e.step == dl.id}
    if "deadline.met" in kinds or "deadline.met-late" in kinds:
        return "met"
    return "missed" if "deadline.missed" in kinds else "open"


def watch_time_rules(inc: Incident) -> None:
    """Fire thresholds and watch deadlines until the incident closes, then settle the deadlines once more.

    The last pass catches a deadline met by one of the final steps in the moment before the close. Each
    rule is settled once over every attempt of the run: fired or cancelled, missed, met (claims on the run).
    """
    try:
        _recall_if_unknown(inc)
        _watch(inc)
    finally:  # a watcher that stops, however, holds no step up (missed_first)
        for dl in inc.runbook.deadlines:
            settled(inc, dl.id).set()


def _watch(inc: Incident) -> None:
    thresholds = list(inc.runbook.thresholds)
    deadlines = {dl.id: "open" for dl in inc.runbook.deadlines}
    closing = False
    while True:
        now = datetime.now(timezone.utc)
        # every rule due is claimed, recorded and settled before any of their steps run: a step waiting for a
        # deadline's record (missed_first) does not wait behind another rule's pages
        side_steps = _thresholds_pass(inc, thresholds, now, closing) + _deadlines_pass(inc, deadlines, now, closing)
        for steps in side_steps:
            run_side_steps(inc, steps)
        if closing:
            return
        closing = inc.closed.wait(0.2)


def _thresholds_pass(inc: Incident, thresholds: list[Threshold], now: datetime, closing: bool) -> list[list]:
    """Cancel the thresholds whose step is done, fire those due (not on the last pass); their steps to run."""
    side_steps = []
    for th in list(thresholds):
        if th.until_step and th.until_step in inc.finished_at:  # the plan: once it is done, the threshold no longer fires
            thresholds.remove(th)
            inc.rules_done.add(th.id)
            if inc.claim(f"threshold-{th.id}"):  # fired, or cancelled, by an earlier attempt: done
                inc.record("threshold.cancelled", f"{th.title.both()}: {th.until_step} done first", step=th.id)
            continue
        if closing:  # the last pass only settles what already happened; nothing fires after the close
            continue
        when = due(inc, th)
        if when is not None and now >= when and inc.holds(th.when):  # a condition not met yet is checked again
            thresholds.remove(th)
            inc.rules_done.add(th.id)
            if inc.claim(f"threshold-{th.id}"):  # an earlier attempt of the run may have fired it: then it is done
                inc.record("threshold.fired", f"{th.title.both()} (after {human(th.after)})", step=th.id)
                side_steps.append(th.steps)
    return side_steps


def _deadlines_pass(inc: Incident, deadlines: dict[str, str], now: datetime, closing: bool) -> list[list]:
    """Settle each open deadline: met (in time or late), or missed (not on the last pass); the on_miss steps to run."""
    side_steps = []
    for dl in inc.runbook.deadlines:
        state = deadlines[dl.id]
        if state == "met":
            continue
        when = due(inc, dl)
        if _met(inc, dl):
            late = when is not None and inc.finished_at[dl.met_by] > when
            deadlines[dl.id] = "met"
            inc.rules_done.add(dl.id)
            if inc.claim(f"deadline-met-{dl.id}"):  # an earlier attempt may have recorded it
                inc.record("deadline.met-late" if late else "deadline.met", dl.title.both(), step=dl.id,
                           due=when.isoformat() if when else None, met_by=dl.met_by)
            settled(inc, dl.id).set()
        elif state == "open" and when is not None and now >= when and not closing and inc.holds(dl.when):
            deadlines[dl.id] = "missed"
            inc.rules_done.add(dl.id)
            if inc.claim(f"deadline-missed-{dl.id}"):  # recorded and paged by an earlier attempt if the run restarted
                inc.record("deadline.missed", f"{dl.title.both()}: due {local_time(when, inc.site.time_zone)}",
                           step=dl.id, due=when.isoformat())
                side_steps.append(dl.on_miss)
            settled(inc, dl.id).set()  # the step that meets it may start now (missed_first)
    return side_steps


def _met(inc: Incident, dl: Deadline) -> bool:
    """Whether the step that meets the deadline finished in a way that meets it (not expired, failed, skipped...)."""
    return dl.met_by in inc.finished_at and inc.steps.get(dl.met_by, {}).get("status") not in NOT_MEETING


def upcoming(inc: Incident) -> list[dict]:
    """The time rules still to come, with when they are due and the claim that marks them done.

    Asked when a wait suspends: with no process of the incident alive, the escalation watcher reads this
    and wakes the run when one is due; the woken run fires it (once: the claim) and suspends again.
    A rule whose condition does not hold now is left out: nothing changes while the incident is suspended.
    """
    out = []
    for th in inc.runbook.thresholds:
        if th.id in inc.rules_done or (th.until_step and th.until_step in inc.finished_at):
            continue
        when = due(inc, th)
        if when is not None and inc.holds(th.when):
            out.append({"what": f"threshold {th.id}", "at": when.isoformat(), "claim": f"threshold-{th.id}"})
    for dl in inc.runbook.deadlines:
        if dl.id in inc.rules_done or _met(inc, dl):
            continue
        when = due(inc, dl)
        if when is not None and inc.holds(dl.when):
            out.append({"what": f"deadline {dl.id}", "at": when.isoformat(), "claim": f"deadline-missed-{dl.id}"})
    return out


def settle_at_close(inc: Incident) -> None:
    """A deadline still open when the incident closes, and that applies, is recorded as not met."""
    for dl in inc.runbook.deadlines:  # settled by this attempt or an earlier one: rules_done
        if dl.id not in inc.rules_done and deadline_state(inc, dl) == "open" and due(inc, dl) is not None and inc.holds(dl.when):
            inc.record("deadline.unmet", f"{dl.title.both()}: not met when the incident closed", step=dl.id)


def run_side_steps(inc: Incident, steps: list) -> None:
    """Steps of a time rule: plain calls beside the main line; a failure is recorded, never fatal to the incident."""
    for step in steps:
        if not inc.holds(step.when):
            continue
        try:
            result = BESIDE[step.kind](inc, step)
            inc.set_result(step.id, {**result, "status": "done"})
            inc.record("step.done", summary(result), step=step.id)
        except Exception as exc:
            inc.record("step.failed", f"{type(exc).__name__}: {exc}", step=step.id)
