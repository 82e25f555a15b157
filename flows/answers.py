"""Answering steps that wait for people, from anywhere that is not the Prefect UI.

The CLI, Slack buttons, SMS replies and signed links all come here. The answer
goes through the same resume endpoint the UI's form uses, after checking that
the responder may answer this step; the run re-checks it, since a UI answer
arrives without passing here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterState,
                                            FlowRunFilterStateType)
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound

from tasks.people import read_input, who_key

from integrations.contacts import load_directory
from runbooks.settings import get_settings


class AnswerResult(BaseModel):
    ok: bool
    message: str
    flow_run_id: str | None = None
    step: str | None = None
    answered_by: str | None = None


class PendingStep(BaseModel):
    flow_run_id: str
    run_name: str
    runbook: str
    step: str
    title: str
    since: datetime | None
    may_answer: list[str]


def _step_of(run: FlowRun) -> str | None:
    key = run.state.state_details.pause_key if run.state else None
    return key.rsplit("-", 1)[0] if key and "-" in key else key


def _runbook_id(run: FlowRun) -> str | None:
    for tag in run.tags or []:
        if tag.startswith("runbook:"):
            return tag.split(":", 1)[1]
    return None


def _waiting(client, run: FlowRun) -> dict[str, Any]:
    """What the run waits for: runbook, step, title and who may answer (written by the run when it paused)."""
    keyset = run.state.state_details.run_input_keyset if run.state else None
    if not keyset:
        return {}
    raw = read_input(client, run.id, who_key(keyset))
    return json.loads(raw) if raw else {}


MAX_TRACK_DEPTH = 5  # tracks inside tracks inside ...: how deep to look for the run that waits


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
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(root)
        except ObjectNotFound:
            return incident_id
        if run.state is None or run.state.is_paused() or run.state.is_final():
            return incident_id
        parents = [root]
        for _ in range(MAX_TRACK_DEPTH):
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED", "RUNNING", "PENDING"]))), limit=200)
            paused = [c for c in children if c.state is not None and c.state.is_paused()]
            matching = [c for c in paused if step_id is None or _step_of(c) == step_id]
            if len(matching) == 1 or (matching and step_id is not None):
                return str(matching[0].id)
            if matching:  # several tracks wait and the answer names no step: do not guess
                return incident_id
            parents = [c.id for c in children if not c.state.is_paused()]
            if not parents:
                break
    return incident_id


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


def answer_step(flow_run_id: UUID | str, by: str, values: dict[str, Any] | None = None, step: str | None = None) -> AnswerResult:
    """Answer the step a run is waiting at, as `by` (a person id, name, alias or address)."""
    values = dict(values or {})
    run_id = UUID(str(flow_run_id))
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return AnswerResult(ok=False, message=f"no flow run {run_id}")
    if run.state is None or not run.state.is_paused():
        run_id = UUID(waiting_run(str(run_id), step))  # the incident may wait inside a parallel track
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is None or not run.state.is_paused():
            return AnswerResult(ok=False, message=f"run {run.name} is not waiting for an answer (it is {run.state.name if run.state else 'unknown'})",
                                flow_run_id=str(run_id))
        meta = _waiting(client, run)
        waiting = meta.get("step") or _step_of(run)
        if step and step != waiting:
            return AnswerResult(ok=False, message=f"run {run.name} is waiting at step '{waiting}', not '{step}'", flow_run_id=str(run_id), step=waiting)
        allowed = meta.get("may_answer") or []
        person = load_directory(get_settings().contacts_file).person(by)
        if allowed and (person is None or person.id not in allowed):
            return AnswerResult(ok=False, message=f"'{by}' may not answer step '{waiting}'; it is for: {', '.join(allowed)}",
                                flow_run_id=str(run_id), step=waiting)
        keyset = run.state.state_details.run_input_keyset or {}
        raw_schema = read_input(client, run_id, keyset["schema"]) if keyset.get("schema") else None
        schema: dict[str, Any] = json.loads(raw_schema) if raw_schema else {}
        run_input = _coerce({**values, "answered_by": person.id if person else by}, schema)
        result = client.resume_flow_run(run_id, run_input=run_input)
    if result.status.value != "ACCEPT":
        reason = getattr(result.details, "reason", None) or str(result.details)
        return AnswerResult(ok=False, message=f"the answer was refused: {reason}", flow_run_id=str(run_id), step=waiting)
    return AnswerResult(ok=True, message=f"answered step '{waiting}' of {run.name}", flow_run_id=str(run_id), step=waiting,
                        answered_by=run_input["answered_by"])


def pending_steps() -> list[PendingStep]:
    """Every step, in every run, that waits for a person."""
    out = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))))
        for run in runs:
            meta = _waiting(client, run)
            step_id = meta.get("step") or _step_of(run) or "?"
            out.append(PendingStep(flow_run_id=str(run.id), run_name=run.name, runbook=meta.get("runbook") or _runbook_id(run) or "?",
                                   step=step_id, title=meta.get("title") or step_id, since=run.state.timestamp if run.state else None,
                                   may_answer=meta.get("may_answer") or []))
    return sorted(out, key=lambda p: p.since or datetime.min)
