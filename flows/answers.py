"""Answering steps that wait for people, from anywhere that is not the Prefect UI.

The CLI, Slack buttons, SMS replies and signed links all come here. The answer
goes through the same resume endpoint the UI's form uses, after checking that
the responder may answer this step; the run re-checks it, since a UI answer
arrives without passing here.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Iterator
from uuid import UUID

from pydantic import BaseModel, Field

from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterState,
                                            FlowRunFilterStateType)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from tasks.client import sync_client
from tasks.incident import runbook_of
from tasks.journal import Entry, emit_entry
from tasks.inputs import read_input, step_of, who_key

from integrations.contacts import load_directory
from runbooks.settings import get_settings


class Waiting(BaseModel):
    """One step a run waits at: the run that is paused, and the step."""

    flow_run_id: str
    step: str


class AnswerResult(BaseModel):
    ok: bool
    message: str
    flow_run_id: str | None = None
    step: str | None = None
    answered_by: str | None = None
    candidates: list[Waiting] = Field(default_factory=list, description="When several steps wait and none was named: each of them.")


class PendingStep(BaseModel):
    flow_run_id: str = Field(description="The run that waits: the incident's own, or one of its parallel tracks.")
    run_name: str
    incident_id: str = Field(description="The incident's (top-level) flow run: what pages name and what `runbook answer` takes.")
    incident_name: str
    runbook: str
    step: str
    title: str
    since: datetime | None
    may_answer: list[str]

    @property
    def in_track(self) -> bool:
        return self.flow_run_id != self.incident_id


class RunIdError(LookupError):
    """A run id that names no run, or several (a prefix shared by more than one)."""

    def __init__(self, message: str, candidates: list[str] | None = None):
        super().__init__(message)
        self.candidates = candidates or []


EPOCH = datetime.min.replace(tzinfo=timezone.utc)
PAGE = 200  # the most flow runs the server returns at once (PREFECT_API_DEFAULT_LIMIT)
FORM_WAIT_SECONDS = 5.0  # how long an answer waits for the form of a run that has just paused (_form_schema)
MAX_TRACK_DEPTH = 5  # tracks inside tracks inside ...: how deep to look for the run that waits
PAUSED = FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))
NOT_FINAL = FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED", "RUNNING", "PENDING"]))


def _step_of(run: FlowRun) -> str | None:
    return step_of(run.state.state_details.pause_key if run.state else None)


def _waiting(client, run: FlowRun) -> dict[str, Any]:
    """What the run waits for: runbook, step, title and who may answer (written by the run when it paused)."""
    keyset = run.state.state_details.run_input_keyset if run.state else None
    if not keyset:
        return {}
    raw = read_input(client, run.id, who_key(keyset))
    return json.loads(raw) if raw else {}


def all_flow_runs(client, flow_run_filter: FlowRunFilter | None = None) -> Iterator[FlowRun]:
    """Every flow run the filter matches, page after page (one read stops at PAGE), newest id first."""
    offset = 0
    while True:
        page = client.read_flow_runs(flow_run_filter=flow_run_filter, sort=FlowRunSort.ID_DESC, limit=PAGE, offset=offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def incident_of(client, run: FlowRun, known: dict[UUID, FlowRun] | None = None) -> FlowRun:
    """The incident a run belongs to: its top-level flow run (a track is a child run started by a task of its parent)."""
    known = {} if known is None else known
    for _ in range(MAX_TRACK_DEPTH + 1):
        if run.parent_task_run_id is None:
            return run
        parent_id = client.read_task_run(run.parent_task_run_id).flow_run_id
        if parent_id is None:
            return run
        if parent_id not in known:
            known[parent_id] = client.read_flow_run(parent_id)
        run = known[parent_id]
    return run


def waiting_descendants(client, incident: FlowRun) -> list[FlowRun]:
    """The paused runs of an incident's parallel tracks (tracks inside tracks too)."""
    paused: list[FlowRun] = []
    parents = [incident.id]
    for _ in range(MAX_TRACK_DEPTH):
        children = list(all_flow_runs(client, FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents),
                                                            state=NOT_FINAL)))
        paused += [c for c in children if c.state is not None and c.state.is_paused()]
        parents = [c.id for c in children if c.state is not None and not c.state.is_paused()]
        if not parents:
            break
    return paused


def waiting_run(incident_id: str, step_id: str | None) -> str:
    """The flow run that actually waits at `step_id` of this incident.

    A page names the incident's own flow run (Message.incident_id), but a step inside a
    parallel track pauses the track's child flow run, which has an id of its own. So when
    the incident's run is not paused, look for a paused descendant waiting at that step.
    Anything unexpected answers with the incident's id, and answer_step says what is wrong.
    """
    try:
        root = UUID(incident_id)
    except ValueError:
        return incident_id
    with sync_client() as client:
        try:
            run = client.read_flow_run(root)
        except ObjectNotFound:
            return incident_id
        if run.state is None or run.state.is_paused() or run.state.is_final():
            return incident_id
        matching = [c for c in waiting_descendants(client, run) if step_id is None or _step_of(c) == step_id]
    if len(matching) == 1 or (matching and step_id is not None):
        return str(matching[0].id)
    return incident_id  # none, or several tracks wait and the answer names no step: do not guess


def resolve_run_id(text: str) -> str:
    """The full id of the flow run `text` names: a whole id, or a unique prefix of one (as git and docker take).

    A prefix is first matched against the runs that wait and their incidents, then against every flow run.
    """
    text = text.strip().lower()
    try:
        return str(UUID(text))
    except ValueError:
        pass
    if not text or any(c not in "0123456789abcdef-" for c in text):
        raise RunIdError(f"'{text}' is not a flow run id or the start of one")
    waiting = pending_steps()
    near = sorted({i for p in waiting for i in (p.flow_run_id, p.incident_id) if i.startswith(text)})
    if len(near) == 1:
        return near[0]
    if len(near) > 1:
        raise RunIdError(f"'{text}' is the start of {len(near)} run ids", near)
    found = []
    with sync_client() as client:
        for run in all_flow_runs(client):
            run_id = str(run.id)
            if run_id.startswith(text):
                found.append(run_id)
            elif run_id < text:  # ids come largest first: none further down can start with text
                break
    if not found:
        raise RunIdError(f"no flow run id starts with '{text}'")
    if len(found) > 1:
        raise RunIdError(f"'{text}' is the start of {len(found)} run ids", found)
    return found[0]


def _coerce(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Turn command-line strings into the types the form's JSON schema asks for."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, value in values.items():
        spec = props.get(key, {})
        types = {spec.get("type")} | {s.get("type") for s in spec.get("anyOf", [])}
        if isinstance(value, str):
            low = value.strip().lower()
            if "boolean" in types and low in ("yes", "y", "true", "1", "是", "no", "n", "false", "0", "否"):
                value = low in ("yes", "y", "true", "1", "是")
            elif "integer" in types and low.lstrip("-").isdigit():
                value = int(low)
            elif "number" in types:
                try:
                    value = float(low)
                except ValueError:
                    pass
        out[key] = value
    return out


def answer_step(flow_run_id: UUID | str, by: str, values: dict[str, Any] | None = None, step: str | None = None,
                via: str = "cli") -> AnswerResult:
    """Answer the step a run is waiting at, as `by` (a person id, name, alias or address), coming `via` a path
    (cli, slack, sms, voice, link). An answer refused here is on the incident's journal with who tried and why.

    `flow_run_id` may be the incident's run, the track that waits, or a unique prefix of either.
    """
    values = dict(values or {})
    try:
        run_id = UUID(resolve_run_id(str(flow_run_id)))
    except RunIdError as exc:
        return AnswerResult(ok=False, message="".join([str(exc), *(f"\n  {c}" for c in exc.candidates)]))
    with sync_client() as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return AnswerResult(ok=False, message=f"no flow run {run_id}")
        if run.state is not None and not run.state.is_paused() and not run.state.is_final():
            # the incident may wait inside its parallel tracks, at one step or at several
            tracks = [Waiting(flow_run_id=str(c.id), step=_waiting(client, c).get("step") or _step_of(c) or "?")
                      for c in waiting_descendants(client, run)]
            named = [w for w in tracks if step is None or w.step == step]
            if len(named) > 1 and step is None:
                return AnswerResult(ok=False, flow_run_id=str(run_id), candidates=named,
                                    message=f"{run.name} waits at {len(named)} steps: "
                                            f"{', '.join(w.step for w in named)}; name the one you answer")
            if named:
                run_id = UUID(named[0].flow_run_id)
                run = client.read_flow_run(run_id)
        if run.state is None or not run.state.is_paused():
            return AnswerResult(ok=False, message=f"run {run.name} is not waiting for an answer (it is {run.state.name if run.state else 'unknown'})",
                                flow_run_id=str(run_id))
        meta = _waiting(client, run)
        waiting = meta.get("step") or _step_of(run)
        if meta.get("kind") == "wait":
            return AnswerResult(ok=False, message=f"run {run.name} waits at step '{waiting}' until {meta.get('until')}: there is "
                                                  "nothing to answer; it goes on by itself then", flow_run_id=str(run_id), step=waiting)
        if step and step != waiting:
            return AnswerResult(ok=False, message=f"run {run.name} is waiting at step '{waiting}', not '{step}'", flow_run_id=str(run_id), step=waiting)
        allowed = meta.get("may_answer") or []
        person = load_directory(get_settings().contacts_file).person(by)
        if allowed and (person is None or person.id not in allowed):
            why = f"'{by}' may not answer step '{waiting}'; it is for: {', '.join(allowed)}"
            _refused(meta, run_id, waiting, by, via, why)
            return AnswerResult(ok=False, message=why,
                                flow_run_id=str(run_id), step=waiting)
        run_input = _coerce({**values, "answered_by": person.id if person else by}, _form_schema(client, run))
        result = client.resume_flow_run(run_id, run_input=run_input)
    if result.status.value != "ACCEPT":
        reason = getattr(result.details, "reason", None) or str(result.details)
        _refused(meta, run_id, waiting, by, via, f"the form refused it: {reason}")
        return AnswerResult(ok=False, message=f"the answer was refused: {reason}", flow_run_id=str(run_id), step=waiting)
    return AnswerResult(ok=True, message=f"answered step '{waiting}' of {run.name}", flow_run_id=str(run_id), step=waiting,
                        answered_by=run_input["answered_by"])


def _form_schema(client, run: FlowRun) -> dict[str, Any]:
    """The JSON schema of the form a run waits with. The run writes it a moment after it pauses (entering Paused
    clears the keyset's inputs): an answer that comes in between waits for it, up to FORM_WAIT_SECONDS, rather
    than going to Prefect as typed ("yes" for a yes/no field is refused: not a boolean)."""
    keyset = run.state.state_details.run_input_keyset or {}
    if not keyset.get("schema"):
        return {}
    deadline = time.monotonic() + FORM_WAIT_SECONDS
    while (raw := read_input(client, run.id, keyset["schema"])) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return json.loads(raw) if raw else {}


def _refused(meta: dict, run_id: UUID, step: str | None, by: str, via: str, why: str) -> None:
    """Put an answer refused before it reached the run on its incident's journal; nobody is paged for it."""
    emit_entry(meta.get("incident") or str(run_id), meta.get("runbook") or "?",
               Entry(kind="answer.refused", step=step, actor=by, text=why, data={"via": via}))


def pending_steps() -> list[PendingStep]:
    """Every step, in every run, that waits for a person: grouped by incident, oldest incident first."""
    out = []
    known: dict[UUID, FlowRun] = {}
    with sync_client() as client:
        for run in all_flow_runs(client, FlowRunFilter(state=PAUSED)):
            meta = _waiting(client, run)
            if meta.get("kind") == "wait":
                continue  # a suspended `wait` step: it waits for its time, not for a person
            step_id = meta.get("step") or _step_of(run) or "?"
            incident = incident_of(client, run, known)
            out.append(PendingStep(flow_run_id=str(run.id), run_name=run.name, incident_id=str(incident.id), incident_name=incident.name,
                                   runbook=meta.get("runbook") or runbook_of(run.tags) or runbook_of(incident.tags) or "?",
                                   step=step_id, title=meta.get("title") or step_id, since=run.state.timestamp if run.state else None,
                                   may_answer=meta.get("may_answer") or []))
    first_wait: dict[str, datetime] = {}
    for p in sorted(out, key=lambda p: p.since or EPOCH):
        first_wait.setdefault(p.incident_id, p.since or EPOCH)
    return sorted(out, key=lambda p: (first_wait[p.incident_id], p.incident_id, p.since or EPOCH))
