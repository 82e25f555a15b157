"""Asking people: the waits of manual checklists, approvals, acknowledgements and failure decisions.

The run pauses with a form (a Prefect `RunInput`) that the UI renders from its JSON schema, under the
step's Markdown instructions. While it waits, the same loop pages the escalation tiers and reminders and
watches the expiry, so an unanswered step takes its expiry branch instead of failing in Prefect's pause
timeout (after which a run can never pause again).

Each ask has its own pause key `<step-id>-<n>`: an answer that is refused (wrong
person, a rule the server cannot check) makes the step ask again under `n+1`.

Restarts: the asks, answers and expiry markers are flow run inputs (`paused-<step>-<n>-who|response|expired`),
so a run that starts again from the top (crash + `runbook recover`, or a suspended wait resumed) replays them
in order (`replay`) instead of asking again. From a deployment a wait suspends the run (its process exits);
the escalation watcher wakes it when a tier or the expiry is due (flows/escalation.py). A long `wait` step
suspends the same way (tasks/wait.py), woken at its end.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from prefect._internal.pydantic.v2_schema import create_v2_schema
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync

from integrations.notify import answered
from runbooks.durations import human
from runbooks.settings import get_settings
from tasks.client import sync_client
from tasks.forms import ANSWERED_BY, default_answer, describe, form_model, options, reason, validate_answer
from tasks.incident import Incident, IncidentEnded
from tasks.steps import StepFailed, plain, summary
from tasks.inputs import (KEYSET_PREFIXES, ask_base, earlier_track_runs, inputs_under, mark_expired, next_due_message, pause_key,
                          put_input, read_input, who_key)
from tasks.journal import JOURNAL
from tasks.records import WRITER
from tasks.tiers import at_text, epoch, page_tier, paged_meanwhile, reminder_timer, wait_key


FIRST_TIME = "_first_time"  # on a replayed answer: whether this attempt is the first to see it


class Expired(Exception):
    """Nobody answered in time."""


class Refused(Exception):
    """This answer, or this person, may not answer the step."""


def _run():
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("a step can only wait for an answer inside a flow run")
    return ctx.flow_run


def run_id_here():
    return _run().id


# Where each step of each run is in its asks: the next ask number, and the last unanswered ask's `who`
# (its escalation clock carries over when the run comes back from a crash or a suspension).
_next_ask: dict[tuple[str, str], int] = {}
_carried: dict[tuple[str, str], dict | None] = {}


def _earlier_asks(client, run_id, step_id: str, first: int, known: dict[str, str] | None = None,
                  fired: set[str] = frozenset()) -> dict[int, dict[str, str]]:
    """The inputs this run already has for a step, by ask number from `first` on: who / response / expired.

    Keys are `paused-<step>-<n>-<part>`, or `suspended-...` for a suspended ask (Prefect names the keyset after
    the state); read in one request per prefix, not one per key, as every resumed run replays every wait.
    `known`: the run's inputs as this attempt began. They are enough when the step had no ask then, or its last ask
    was answered or expired (earlier attempts are over, and this one has not asked yet); an ask still open then may
    have been answered since, so the server is asked. So it is when the pause key of the ask after them has already
    fired (`fired`: Prefect's record on the run): an earlier attempt asked more than `known` shows (its `started`
    claim lost, a `who` being rewritten as the inputs were read)."""
    if known is not None:
        asks = _asks_in(known, step_id, first)
        settled = not asks or {"response", "expired"} & asks[max(asks)].keys()
        if settled and pause_key(step_id, max(asks, default=first - 1) + 1) not in fired:
            return asks
    found: dict[str, str] = {}
    for prefix in KEYSET_PREFIXES:
        found.update(inputs_under(client, run_id, f"{prefix}-{step_id}-"))
    return _asks_in(found, step_id, first)


def _asks_in(inputs: dict[str, str], step_id: str, first: int) -> dict[int, dict[str, str]]:
    """A step's asks among a run's inputs, by ask number: the asks in a row from `first`, as a run makes them."""
    found: dict[int, dict[str, str]] = {}
    for prefix in KEYSET_PREFIXES:
        stem = f"{prefix}-{step_id}-"
        for key, value in inputs.items():
            if not key.startswith(stem):
                continue
            n, _, part = key.removeprefix(stem).partition("-")
            if n.isdigit() and part in ("who", "response", "expired"):
                found.setdefault(int(n), {})[part] = value
    asks: dict[int, dict[str, str]] = {}
    n = first
    while n in found:
        asks[n] = found[n]
        n += 1
    return asks


def replay(incident, step, *, kind: str, allowed: list) -> dict[str, Any] | None:
    """The answer this run already got for the step's next ask, if it got one before a crash or a suspension.

    A run that starts again from the top (a worker died, `runbook recover`, a suspended wait resumed) must
    not ask again what was answered: the answers are flow run inputs and outlive the process (a track's may
    be on an earlier run of the track: tasks/inputs.py earlier_track_runs). Raises Expired when the ask was
    marked expired. None when the step must (still) ask."""
    run_id = run_id_here()
    slot = (str(run_id), step.id)
    model = form_model(step, kind=kind)
    n = _next_ask.get(slot, 1)
    # the incident run's inputs as this attempt began serve the step's first replay in it (a track's run is another)
    known = (getattr(incident, "inputs_at_start", None)
             if slot not in _next_ask and str(run_id) == str(getattr(incident, "id", "")) else None)
    with sync_client() as client:
        earlier = [] if slot in _next_ask else [_earlier_asks(client, r, step.id, 1) for r in earlier_track_runs(client, _run())]
        fired = set((_run().empirical_policy.pause_keys or ()) if known is not None else ())
        sources = [(asks, 1, False) for asks in earlier] + [(_earlier_asks(client, run_id, step.id, n, known, fired), n, True)]
    carried = None
    for asks, k, here in sources:
        while k in asks:
            parts = asks[k]
            carried = json.loads(parts["who"]) if "who" in parts else carried
            if "response" in parts:
                try:
                    answer = validate_answer(model, json.loads(parts["response"]))
                    check_identity(answer[ANSWERED_BY], allowed, incident)
                except (ValidationError, Refused, ValueError) as exc:
                    # Refused (straight through Prefect's API, as the UI resumes): on the journal once, and the step
                    # waits on with its clock and pages as they were (`carried`), paging nobody again.
                    refuse(incident, step, k, parts["response"], exc, via="prefect-api")
                    k += 1
                    continue
                _next_ask[slot], _carried[slot] = (k + 1 if here else n), None
                answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                answer[FIRST_TIME] = incident.claim(f"answered-{pause_key(step.id, k)}")  # later attempts replay it quietly
                return answer
            if "expired" in parts:
                _next_ask[slot], _carried[slot] = (k + 1 if here else n), None
                raise Expired(parts["expired"])
            k += 1  # asked and never answered: ask again under a fresh key (a pause key fires only once per run)
        n = k if here else n
    _next_ask[slot] = n
    _carried[slot] = carried
    return None


def is_new_wait(step) -> bool:
    """False when `replay` found an unanswered ask of this step from before a restart (its first page went out)."""
    return _carried.get((str(run_id_here()), step.id)) is None


def suspends_waits() -> bool:
    """Whether a wait frees its process (Prefect's Suspended) instead of pausing in it.

    Needs a deployment (a worker reruns the flow on resume) and a root flow run (subflows cannot suspend).
    RUNBOOK_SUSPEND_WAITS=false keeps every wait in its process; the default is on for deployments."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None or ctx.flow_run.parent_task_run_id:
        return False
    return os.environ.get("RUNBOOK_SUSPEND_WAITS", "true").strip().lower() not in ("0", "false", "no", "off")


def wait_for_answer(incident, step, *, kind: str, description: str, allowed: list, tiers: list, remind_every: float | None,
                    expires: float | None, first: tuple[list[str], str] | None = None) -> dict[str, Any]:
    """Pause this flow run until an accepted answer arrives; page tiers meanwhile; raise Expired at expiry.

    `tiers` is [(seconds_after_start, roles, text)], `allowed` the people who may answer (empty: anyone),
    `first` the roles and text paged when the wait began (what `remind_every` repeats, e.g. a voice call).
    Call `replay` first. When `suspends_waits()`, the run is suspended instead (its process exits) and the
    escalation watcher (flows/escalation.py) wakes it when a tier or the expiry is due.
    """
    run_id = run_id_here()
    slot = (str(run_id), step.id)
    model = form_model(step, kind=kind)
    poll = get_settings().answer_poll_seconds
    carried = _carried.get(slot)
    started = epoch(carried["waiting_since"]) if carried else time.time()
    paged: set[int] = set(carried.get("paged", [])) if carried else set()
    last_page = epoch(carried["last_page"]) if carried and carried.get("last_page") else started
    suspend = suspends_waits()
    if carried and suspend and any(i not in paged and time.time() - started >= after for i, (after, _, _) in enumerate(tiers)):
        last_page = paged_meanwhile(run_id, wait_key(step.id, started), len(tiers), paged, last_page)
    # who was paged last: reminders repeat it (the wait's first page until a tier takes over)
    current_tier = (tiers[max(paged)][1], tiers[max(paged)][2]) if paged else first
    notice = ""

    def escalate(now: float) -> None:
        nonlocal current_tier, last_page
        for index, (after, roles, text) in enumerate(tiers):
            if index not in paged and now - started >= after:
                paged.add(index)
                current_tier, last_page = (roles, text), now
                page_tier(incident, step.id, kind, wait_key(step.id, started), index, roles, text, after * incident.time_scale)

    def remind(now: float) -> None:
        nonlocal last_page
        if remind_every and current_tier and now - last_page >= remind_every:
            last_page = now
            # counted from the wait's start, so a reminder is sent once whichever attempt of the run gets to it
            if incident.claim(f"reminder-{pause_key(step.id, int((now - started) // remind_every))}"):
                incident.record("escalation.reminder", f"reminding {', '.join(current_tier[0])}", step=step.id)
                incident.page(current_tier[0], current_tier[1], step=step.id, answer_options=options(kind))

    def timers() -> list[dict]:
        """Everything due while the run is suspended, for the escalation watcher (flows/escalation.py)."""
        out = [{"what": f"tier {i + 1}", "at": at_text(started + after)} for i, (after, _, _) in enumerate(tiers) if i not in paged]
        if remind_every and current_tier:
            out.append(reminder_timer(step.id, started, last_page, remind_every))
        if expires is not None:
            out.append({"what": "expiry", "at": at_text(started + expires)})
        return out + incident.upcoming()

    def expire(client, ask: int, *, paused: bool) -> Expired:
        why = f"no answer within {human(expires * incident.time_scale)}"
        if paused:
            client.set_flow_run_state(run_id, Running(message=f"{step.id} expired unanswered"), force=True)
        mark_expired(client, run_id, ask_base(step.id, ask), why)
        _next_ask[slot], _carried[slot] = ask + 1, None
        return Expired(why)

    with sync_client() as client:
        for ask in range(_next_ask.get(slot, 1), 1000):
            if suspend:  # nobody ran the loop below while the run was suspended: catch up first
                escalate(time.time())
                remind(time.time())
                if expires is not None and time.time() - started >= expires:
                    raise expire(client, ask, paused=False)
            who = {"runbook": incident.runbook.id, "incident": incident.id, "step": step.id, "kind": kind,
                   "title": step.title.both(), "may_answer": [p.id for p in allowed],
                   "waiting_since": at_text(started), "asked_at": at_text(time.time()), "suspended": suspend,
                   "tiers": [{"at": at_text(started + after), "roles": roles, "text": text, "plan_seconds": after * incident.time_scale}
                             for after, roles, text in tiers],
                   "wait_key": wait_key(step.id, started),
                   "paged": sorted(paged), "last_page": at_text(last_page), "remind_every": remind_every,
                   "expires_at": at_text(started + expires) if expires is not None else None,
                   "timers": timers() if suspend else []}
            state, keyset = pause_run(client, run_id, pause_key(step.id, ask), model, notice + description, who=who, reschedule=suspend)
            incident.record("step.waiting", f"waiting for an answer (ask {ask})" + (" — suspended" if suspend else ""),
                            step=step.id, may_answer=[p.id for p in allowed], pause_key=pause_key(step.id, ask))
            if suspend:
                # The engine catches Pause and ends the process; the resume (or the watcher) reschedules the run,
                # a worker runs it from the top, finished steps come back Cached and `replay` finds the answer.
                raise Pause(state=state)
            while True:
                time.sleep(poll)
                now = time.time()
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_running():
                    break
                if run.state is not None and run.state.is_final():
                    raise RuntimeError(f"the run was {run.state.name} while waiting for an answer")
                escalate(now)
                remind(now)
                if expires is not None and now - started >= expires:
                    raise expire(client, ask, paused=True)
            raw = read_input(client, run_id, keyset["response"])
            try:
                if raw is None:
                    raise Refused("the run was resumed without an answer")
                answer = validate_answer(model, json.loads(raw))
                check_identity(answer[ANSWERED_BY], allowed, incident)
            except (ValidationError, Refused, ValueError) as exc:
                why = refuse(incident, step, ask, raw, exc, via="prefect-api")
                notice = f"> **上一个回答未被接受 / The previous answer was refused:** {why}\n\n"
                continue
            incident.claim(f"answered-{pause_key(step.id, ask)}")  # a later attempt replays it without recording it again
            _next_ask[slot], _carried[slot] = ask + 1, None
            answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            answer["waited_seconds"] = round(time.time() - started, 2)
            return answer
    raise RuntimeError("too many refused answers")


def refuse(incident: Incident, step, ask: int, raw: str | None, exc: Exception, *, via: str) -> str:
    """Put a refused answer on the journal (once per ask): who tried, when, by which path, and why."""
    why = reason(exc)
    try:
        tried = json.loads(raw).get(ANSWERED_BY) if raw else None
    except (ValueError, AttributeError):
        tried = None
    if incident.claim(f"refused-{pause_key(step.id, ask)}"):
        incident.record("answer.refused", why, step=step.id, actor=str(tried) if tried else "unknown", via=via,
                        pause_key=pause_key(step.id, ask))
    return why


def check_identity(answered_by: str, allowed: list, incident) -> str:
    """The person id of who answered, if they may; Refused otherwise."""
    person = incident.directory.person(answered_by)
    if not allowed:
        return person.id if person else answered_by
    if person is None or person.id not in {p.id for p in allowed}:
        names = ", ".join(f"{p.name} ({p.id})" for p in allowed)
        raise Refused(f"'{answered_by}' may not answer this step; it is for: {names}")
    return person.id


def pause_run(client, run_id, key: str, model: type[RunInput], description: str, who: dict, reschedule: bool = False):
    state = Paused(timeout_seconds=None, reschedule=reschedule, pause_key=key, name="Suspended" if reschedule else "Paused",
                   message=next_due_message(who.get("timers", [])) if reschedule else None)
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = keyset
    put_input(client, run_id, who_key(keyset), json.dumps(who, ensure_ascii=False))
    JOURNAL.flush()  # the step's start, if still held (tasks/journal.py), goes before the run waits
    if reschedule:  # once suspended the run may be resumed at once, by another process: it must find every done step
        WRITER.flush(run=str(run_id))
    result = propose_state_sync(client=client, state=state, flow_run_id=run_id)
    if not result.is_paused():
        raise RuntimeError(f"the run could not pause for {key}: server answered {result.type.value}")
    # The form goes in after the pause (entering Paused clears the keyset's inputs), written with the
    # client we hold: RunInput.save() dispatches to async in a worker thread and then writes nothing.
    schema = create_v2_schema(model.__name__, model_base=model)
    client.create_flow_run_input(flow_run_id=run_id, key=keyset["schema"], value=json.dumps(schema))
    client.create_flow_run_input(flow_run_id=run_id, key=keyset["description"], value=json.dumps(description, ensure_ascii=False))
    return result, keyset


# ---------------------------------------------------------------- asking, from a step


def wait_for_people(inc: Incident, step, walk, *, kind: str) -> dict | None:
    """An accepted answer, or None after the expiry branch ran (when the runbook goes on)."""
    try:
        answer = ask(inc, step, kind=kind)
    except Expired as exc:
        inc.set_result(step.id, {"status": "expired"})
        inc.record("step.expired", str(exc), step=step.id)
        walk(inc, step.on_expiry)
        if not step.continue_on_expiry:
            raise IncidentEnded("expired", f"{step.id}: {exc}") from None
        return None
    if answer.pop(FIRST_TIME, True):  # an answer replayed after a restart is on the journal already
        inc.record("step.answered", summary(answer), step=step.id, actor=answer.get("answered_by"), answer=plain(answer))
        # the chat messages that asked show who answered, whichever path the answer took (UI, CLI, chat, SMS)
        answered(inc.id, step.id, by=answer.get("answered_by") or "?",
                 summary=answer.get("decision") or ("ack" if answer.get("acknowledged") else summary(answer)))
    return answer


def ask(inc: Incident, step, *, kind: str) -> dict:
    """Get an answer from the script, from --auto, or from people (pausing the run)."""
    allowed = inc.may_answer(step.answerers)
    scripted = inc.answers.get(step.id)
    if scripted == "expire":
        raise Expired("scripted: nobody answers")
    if scripted is not None or inc.auto:
        # A script that does not say who answered answers as the first person allowed to.
        by = allowed[0].id if allowed else ("drill" if inc.auto else "scripted")
        values = {ANSWERED_BY: by, **scripted} if scripted is not None else default_answer(step, kind=kind, by=by)
        try:
            answer = validate_answer(form_model(step, kind=kind), values)
            if scripted is not None:
                check_identity(answer[ANSWERED_BY], allowed, inc)
        except (ValidationError, Refused) as exc:
            raise StepFailed(f"the scripted answer for '{step.id}' is not valid: {reason(exc)}") from None
        answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return answer
    replayed = replay(inc, step, kind=kind, allowed=allowed)  # answered before a restart
    if replayed is not None:
        return replayed
    description = describe(inc, step, kind=kind, allowed=allowed)
    first = getattr(step, "answerers", None) or ([step.role] if step.role else [])
    if kind in ("manual", "approval") and first and is_new_wait(step):
        inc.page(first, description, step=step.id, answer_options=options(kind))
    tiers = [(inc.seconds(t.after), t.notify, inc.both(t.message) if t.message else description) for t in step.escalation]
    return wait_for_answer(
        inc, step, kind=kind, description=description, allowed=allowed, tiers=tiers,
        remind_every=inc.seconds(step.remind_every) if step.remind_every else None,
        expires=inc.seconds(step.expires) if step.expires else None,
        first=(list(step.to), inc.both(step.message)) if kind == "ack" else ((first, description) if first else None),
    )
