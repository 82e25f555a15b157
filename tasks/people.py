"""Steps that wait for people: manual checklists, approvals and acknowledgements.

The run pauses with a form (a Prefect `RunInput`) that the UI renders from its
JSON schema, under the step's Markdown instructions. While it waits, the same
loop pages the escalation tiers and reminders and watches the expiry, so an
unanswered step takes its expiry branch instead of failing in Prefect's pause
timeout (after which a run can never pause again).

Each ask has its own pause key `<step-id>-<n>`: an answer that is refused (wrong
person, a rule the server cannot check) makes the step ask again under `n+1`.

Restarts: the asks, answers and expiry markers are flow run inputs
(`paused-<step>-<n>-who|response|expired`), so a run that starts again from the
top (crash + `runbook recover`, or a suspended wait resumed) replays them in
order (`replay`) instead of asking again. From a deployment a wait suspends
the run (its process exits); the escalation watcher wakes it when a tier or
the expiry is due (flows/recovery.py).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Literal, Optional

import httpx
from pydantic import Field, ValidationError, create_model

from prefect._internal.pydantic.v2_schema import create_v2_schema
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound, Pause
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync

from runbooks.model import FormField
from runbooks.settings import get_settings

ANSWERED_BY = "answered_by"
_TYPES: dict[str, Any] = {"yes_no": bool, "text": str, "number": float, "integer": int, "datetime": datetime}


class Expired(Exception):
    """Nobody answered in time."""


class Refused(Exception):
    pass


def form_model(step, *, kind: str) -> type[RunInput]:
    """The RunInput class for a step: its fields, plus who answered (and decision / acknowledgement)."""
    fields: dict[str, Any] = {
        ANSWERED_BY: (str, Field(title="回答人 Answered by", description="Your name or id in the contacts directory.")),
    }
    if kind == "approval":
        fields["decision"] = (Literal["approve", "reject"], Field(title="决定 Decision"))
        fields["comment"] = (Optional[str], Field(None, title="意见 Comment"))
    if kind == "ack":
        fields["acknowledged"] = (bool, Field(True, title="已收到 Acknowledged"))
    for f in getattr(step, "fields", []) or []:
        fields[f.id] = _field(f)
    name = "".join(part.capitalize() for part in step.id.split("-")) + "Form"
    return create_model(name, __base__=RunInput, **fields)


def _field(f: FormField) -> tuple[Any, Any]:
    if f.type == "choice":
        typ: Any = Literal[tuple(c.value for c in f.choices)]  # type: ignore[misc]
        choices = "; ".join(f"{c.value} = {c.label.zh} {c.label.en}" for c in f.choices)
        description = choices
    else:
        typ, description = _TYPES[f.type], None
    title = f"{f.label.zh} {f.label.en}"
    if f.required and f.default is None:
        return typ, Field(title=title, description=description)
    return Optional[typ], Field(f.default, title=title, description=description)


def default_answer(step, *, kind: str, by: str = "drill") -> dict[str, Any]:
    """What --auto answers: every default; required fields without one get a plausible value."""
    answer: dict[str, Any] = {ANSWERED_BY: by}
    if kind == "approval":
        answer.update(decision="approve", comment="auto-approved in a drill")
    if kind == "ack":
        answer["acknowledged"] = True
    for f in getattr(step, "fields", []) or []:
        if f.default is not None:
            answer[f.id] = f.default
        elif f.required:
            answer[f.id] = {"yes_no": True, "text": "(drill)", "number": 0, "integer": 0,
                            "datetime": datetime.now(timezone.utc).isoformat(),
                            "choice": f.choices[0].value if f.choices else None}[f.type]
    return answer


def validate_answer(model: type[RunInput], values: dict[str, Any]) -> dict[str, Any]:
    instance = model(**values)
    return instance.model_dump(mode="json", exclude={"metadata"})


def _run_id():
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("a step can only wait for an answer inside a flow run")
    return ctx.flow_run.id


# Where each step of each run is in its asks: the next ask number, and the last unanswered ask's `who`
# (its escalation clock carries over when the run comes back from a crash or a suspension).
_next_ask: dict[tuple[str, str], int] = {}
_carried: dict[tuple[str, str], dict | None] = {}


def _earlier_asks(client, run_id, step_id: str, first: int) -> dict[int, dict[str, str]]:
    """The inputs this run already has for a step, by ask number from `first` on: who / response / expired.

    Keys are `paused-<step>-<n>-<part>`, or `suspended-...` for a suspended ask (Prefect names the keyset after the state)."""
    asks: dict[int, dict[str, str]] = {}
    n = first
    while True:
        parts = {}
        for part in ("who", "response", "expired"):
            for prefix in ("paused", "suspended"):  # Prefect's keyset starts with the state's name
                value = read_input(client, run_id, f"{prefix}-{step_id}-{n}-{part}")
                if value is not None:
                    parts[part] = value
        if not parts:
            return asks
        asks[n] = parts
        n += 1


def replay(incident, step, *, kind: str, allowed: list) -> dict[str, Any] | None:
    """The answer this run already got for the step's next ask, if it got one before a crash or a suspension.

    A run that starts again from the top (a worker died, `runbook recover`, a suspended wait resumed)
    must not ask again what was answered: the answers are flow run inputs and outlive the process.
    Raises Expired when the ask was marked expired. None when the step must (still) ask.
    """
    run_id = _run_id()
    slot = (str(run_id), step.id)
    model = form_model(step, kind=kind)
    n = _next_ask.get(slot, 1)
    with get_client(sync_client=True) as client:
        asks = _earlier_asks(client, run_id, step.id, n)
    carried = None
    while n in asks:
        parts = asks[n]
        if "response" in parts:
            try:
                answer = validate_answer(model, json.loads(parts["response"]))
                check_identity(answer[ANSWERED_BY], allowed, incident)
            except (ValidationError, Refused, ValueError):
                n += 1  # refused the first time too: that run asked again under n + 1
                continue
            _next_ask[slot] = n + 1
            _carried[slot] = None
            answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            incident.record("step.replayed", f"answer of ask {n} given before the run restarted", step=step.id,
                            actor=answer[ANSWERED_BY], pause_key=f"{step.id}-{n}")
            return answer
        if "expired" in parts:
            _next_ask[slot] = n + 1
            _carried[slot] = None
            raise Expired(parts["expired"])
        if "who" in parts:
            carried = json.loads(parts["who"])
        n += 1  # asked and never answered: ask again under a fresh key (a pause key fires only once per run)
    _next_ask[slot] = n
    _carried[slot] = carried
    return None


def is_new_wait(step) -> bool:
    """False when `replay` found an unanswered ask of this step from before a restart (its first page went out)."""
    return _carried.get((str(_run_id()), step.id)) is None


def suspends_waits() -> bool:
    """Whether a wait frees its process (Prefect's Suspended) instead of pausing in it.

    Needs a deployment (a worker reruns the flow on resume) and a root flow run (subflows cannot suspend).
    RUNBOOK_SUSPEND_WAITS=false keeps every wait in its process; the default is on for deployments."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None or ctx.flow_run.parent_task_run_id:
        return False
    return os.environ.get("RUNBOOK_SUSPEND_WAITS", "true").strip().lower() not in ("0", "false", "no", "off")


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def wait_for_answer(incident, step, *, kind: str, description: str, allowed: list, tiers: list, remind_every: float | None,
                    expires: float | None, first: tuple[list[str], str] | None = None) -> dict[str, Any]:
    """Pause this flow run until an accepted answer arrives; page tiers meanwhile; raise Expired at expiry.

    `tiers` is [(seconds_after_start, roles, text)], `allowed` the people who may answer (empty: anyone),
    `first` the roles and text paged when the wait began (what `remind_every` repeats, e.g. a voice call).
    Call `replay` first. When `suspends_waits()`, the run is suspended instead (its process exits) and the
    escalation watcher (flows/recovery.py) wakes it when a tier or the expiry is due.
    """
    run_id = _run_id()
    slot = (str(run_id), step.id)
    model = form_model(step, kind=kind)
    poll = get_settings().answer_poll_seconds
    carried = _carried.get(slot)
    started = _epoch(carried["waiting_since"]) if carried else time.time()
    paged: set[int] = set(carried.get("paged", [])) if carried else set()
    last_page = started
    current_tier = first  # who was paged when the wait began: reminders repeat it until a tier takes over
    notice = ""
    suspend = suspends_waits()

    def escalate(now: float) -> None:
        nonlocal current_tier, last_page
        for index, (after, roles, text) in enumerate(tiers):
            if index not in paged and now - started >= after:
                paged.add(index)
                current_tier, last_page = (roles, text), now
                incident.record("escalation.tier", f"no answer after {_human(after * incident.time_scale)}: paging {', '.join(roles)}",
                                step=step.id, tier=index + 1, roles=roles)
                incident.page(roles, text, step=step.id, answer_options=_options(kind))

    def expire(client, ask: int, *, paused: bool) -> Expired:
        reason = f"no answer within {_human(expires * incident.time_scale)}"
        if paused:
            client.set_flow_run_state(run_id, Running(message=f"{step.id} expired unanswered"), force=True)
        _mark_expired(client, run_id, f"paused-{step.id}-{ask}", reason)
        _next_ask[slot], _carried[slot] = ask + 1, None
        return Expired(reason)

    with get_client(sync_client=True) as client:
        for ask in range(_next_ask.get(slot, 1), 1000):
            if suspend:  # nobody ran the loop below while the run was suspended: catch up first
                escalate(time.time())
                if expires is not None and time.time() - started >= expires:
                    raise expire(client, ask, paused=False)
            who = {"runbook": incident.runbook.id, "step": step.id, "kind": kind,
                   "title": f"{step.title.zh} / {step.title.en}", "may_answer": [p.id for p in allowed],
                   "waiting_since": _at(started), "asked_at": _at(time.time()), "suspended": suspend,
                   "tiers": [{"at": _at(started + after), "roles": roles} for after, roles, _ in tiers],
                   "paged": sorted(paged), "expires_at": _at(started + expires) if expires is not None else None}
            state, keyset = _pause(client, run_id, f"{step.id}-{ask}", model, notice + description, who=who, reschedule=suspend)
            incident.record("step.waiting", f"waiting for an answer (ask {ask})" + (" — suspended" if suspend else ""),
                            step=step.id, may_answer=[p.id for p in allowed], pause_key=f"{step.id}-{ask}")
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
                if remind_every and current_tier and now - last_page >= remind_every:
                    last_page = now
                    incident.record("escalation.reminder", f"reminding {', '.join(current_tier[0])}", step=step.id)
                    incident.page(current_tier[0], current_tier[1], step=step.id, answer_options=_options(kind))
                if expires is not None and now - started >= expires:
                    raise expire(client, ask, paused=True)
            try:
                raw = _read_answer(client, run_id, keyset)
                if raw is None:
                    raise Refused("the run was resumed without an answer")
                answer = validate_answer(model, json.loads(raw))
                check_identity(answer[ANSWERED_BY], allowed, incident)
            except (ValidationError, Refused, ValueError) as exc:
                reason = _reason(exc)
                incident.record("answer.refused", reason, step=step.id)
                notice = f"> **上一个回答未被接受 / The previous answer was refused:** {reason}\n\n"
                continue
            _next_ask[slot], _carried[slot] = ask + 1, None
            answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            answer["waited_seconds"] = round(time.time() - started, 2)
            return answer
    raise RuntimeError("too many refused answers")


def _mark_expired(client, run_id, base_key: str, reason: str) -> None:
    """The explicit expiry marker `<base key>-expired` (base key: `paused-<step>-<n>`) that a replaying run treats as expiry."""
    try:
        client.create_flow_run_input(flow_run_id=run_id, key=f"{base_key}-expired", value=reason)
    except Exception as exc:
        if "409" not in str(exc) and "already exists" not in str(exc).lower():
            raise


def check_identity(answered_by: str, allowed: list, incident) -> str:
    """The person id of who answered, if they may; Refused otherwise."""
    person = incident.directory.person(answered_by)
    if not allowed:
        return person.id if person else answered_by
    if person is None or person.id not in {p.id for p in allowed}:
        names = ", ".join(f"{p.name} ({p.id})" for p in allowed)
        raise Refused(f"'{answered_by}' may not answer this step; it is for: {names}")
    return person.id


def who_key(keyset: dict) -> str:
    """Flow run input that says which step waits and who may answer it, so any client can check without the runbook."""
    return keyset["response"].removesuffix("-response") + "-who"


def _pause(client, run_id, key: str, model: type[RunInput], description: str, who: dict, reschedule: bool = False):
    state = Paused(timeout_seconds=None, reschedule=reschedule, pause_key=key, name="Suspended" if reschedule else "Paused")
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = keyset
    _put_input(client, run_id, who_key(keyset), json.dumps(who, ensure_ascii=False))
    result = propose_state_sync(client=client, state=state, flow_run_id=run_id)
    if not result.is_paused():
        raise RuntimeError(f"the run could not pause for {key}: server answered {result.type.value}")
    # The form goes in after the pause (entering Paused clears the keyset's inputs), written with the
    # client we hold: RunInput.save() dispatches to async in a worker thread and then writes nothing.
    schema = create_v2_schema(model.__name__, model_base=model)
    client.create_flow_run_input(flow_run_id=run_id, key=keyset["schema"], value=json.dumps(schema))
    client.create_flow_run_input(flow_run_id=run_id, key=keyset["description"], value=json.dumps(description, ensure_ascii=False))
    return result, keyset


def _put_input(client, run_id, key: str, value: str) -> None:
    """Create or replace a flow run input (inputs cannot be updated in place)."""
    try:
        client.create_flow_run_input(flow_run_id=run_id, key=key, value=value)
    except Exception as exc:
        if "409" not in str(exc) and "already exists" not in str(exc).lower():
            raise
        client.delete_flow_run_input(flow_run_id=run_id, key=key)
        client.create_flow_run_input(flow_run_id=run_id, key=key, value=value)


def _read_answer(client, run_id, keyset) -> str | None:
    return read_input(client, run_id, keyset["response"])


def read_input(client, run_id, key: str) -> str | None:
    """A flow run input, or None when there is none (the sync client raises a 404 status error, not ObjectNotFound)."""
    try:
        return client.read_flow_run_input(flow_run_id=run_id, key=key)
    except ObjectNotFound:
        return None
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise


def _options(kind: str) -> list[str]:
    return {"approval": ["approve", "reject"], "ack": ["ack"]}.get(kind, ["answer"])


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
    return str(exc)


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
