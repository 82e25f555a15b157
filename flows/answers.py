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
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound

from tasks.manual import who_key

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
    try:
        return json.loads(client.read_flow_run_input(flow_run_id=run.id, key=who_key(keyset)))
    except ObjectNotFound:
        return {}


def _waiting_child(client, parent_id: UUID, step: str | None) -> FlowRun | None:
    """A paused child run (parallel track) of an incident, waiting at `step` if given."""
    from prefect.client.schemas.filters import FlowRunFilterParentFlowRunId

    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))))
    for child in children:
        if step is None or _waiting(client, child).get("step", _step_of(child)) == step:
            return child
    return None


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
            # The incident may wait inside a parallel track: a child run of its own.
            child = _waiting_child(client, run_id, step)
            if child is None:
                return AnswerResult(ok=False, message=f"run {run.name} is not waiting for an answer (it is {run.state.name if run.state else 'unknown'})",
                                    flow_run_id=str(run_id))
            run, run_id = child, child.id
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
        schema: dict[str, Any] = {}
        if keyset.get("schema"):
            try:
                schema = json.loads(client.read_flow_run_input(flow_run_id=run_id, key=keyset["schema"]))
            except ObjectNotFound:
                schema = {}
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
