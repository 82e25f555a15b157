"""Post-incident reports: what the plans require a report to contain, from the archive or from Prefect.

A report holds the outcome, the severity and why, every answer recorded on a form
(grouped per step, under the runbook's own field labels), every document a
`report` step drafted, the deadlines met or missed, who was paged, and the whole
timeline. It is built from an `IncidentRecord`: the archived one first, so it
survives the run's deletion from Prefect; for a run not archived (still open, or
its archive lost) the record is rebuilt from Prefect's events and artifacts.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import ObjectNotFound

from flows.record.archive import IncidentRecord, PlanOutline, find_record, outline
from flows.record.timeline import (Timeline, TimelineEntry, from_journal, iso, journal_from_events, merge,
                                   prefect_history)
from integrations.localtime import local_time
from runbooks.durations import human
from runbooks.loader import RunbookError, load_file
from runbooks.model import Runbook
from runbooks.settings import get_settings
from tasks.client import sync_client
from tasks.journal import Entry

TEMPLATES = Path(__file__).parent / "templates"
FORMATS = ("md", "html", "json")

# Form fields every waiting step has besides the runbook's own (tasks/people.py form_model).
_BUILT_IN_LABELS = {
    "answered_by": "回答人 Answered by", "decision": "决定 Decision", "comment": "意见 Comment",
    "acknowledged": "已收到 Acknowledged", "answered_at": "回答时间 Answered at",
}
_NOT_ANSWERS = {"waited_seconds"}


class FieldAnswer(BaseModel):
    field: str
    label: str
    value: Any
    shown: str = Field(description="The value as a person reads it (a choice with its label).")


class StepAnswer(BaseModel):
    step: str
    title: str
    at: datetime
    answered_by: str
    fields: list[FieldAnswer]


class Document(BaseModel):
    step: str
    title: str
    document: str


class DeadlineOutcome(BaseModel):
    id: str
    title: str
    state: Literal["met", "met-late", "missed", "unmet", "not started"]
    due: str | None = None
    at: datetime | None = None


class Page(BaseModel):
    at: datetime
    step: str | None
    person: str | None
    channel: str | None
    outcome: str
    error: str | None = None


class IncidentReport(BaseModel):
    flow_run_id: str
    runbook: str
    title: str
    label: str | None
    drill: bool
    outcome: str
    message: str
    started: datetime
    ended: datetime | None = Field(None, description="None while the incident is open.")
    duration_seconds: float = Field(description="Until it closed, or until now while it is open.")
    severity: str | None
    severity_label: str | None
    severity_reason: str | None
    params: dict[str, Any]
    answers: list[StepAnswer]
    documents: list[Document]
    deadlines: list[DeadlineOutcome]
    paged: list[Page]
    timeline: Timeline
    source: Literal["archive", "prefect"] = Field(description="Where the record came from.")

    def missed_deadlines(self) -> list[DeadlineOutcome]:
        return [d for d in self.deadlines if d.state in ("missed", "met-late", "unmet")]


# ---------------------------------------------------------------- building


def build_report(record: IncidentRecord, *, source: Literal["archive", "prefect"] = "archive",
                 timeline: Timeline | None = None) -> IncidentReport:
    plan = record.plan
    timeline = timeline or Timeline(flow_run_id=record.flow_run_id, runbook=record.runbook,
                                    entries=merge(from_journal(record.journal), record.history),
                                    prefect_available=source == "prefect")
    return IncidentReport(
        flow_run_id=record.flow_run_id, runbook=record.runbook, title=f"{record.title_zh} / {record.title_en}",
        label=record.label, drill=record.drill, outcome=record.outcome, message=record.message,
        started=record.started, ended=record.ended,
        duration_seconds=((record.ended or datetime.now(timezone.utc)) - record.started).total_seconds(),
        severity=record.severity, severity_label=record.severity_label, severity_reason=record.severity_reason,
        params=record.params, answers=_answers(record, plan), documents=_documents(record, plan),
        deadlines=_deadlines(record, plan), paged=_pages(record), timeline=timeline, source=source,
    )


def _title(plan: PlanOutline, step: str) -> str:
    s = plan.steps.get(step)
    if s:
        return f"{s.title_zh} / {s.title_en}"
    if step.endswith("-failed") and step.removesuffix("-failed") in plan.steps:
        base = plan.steps[step.removesuffix("-failed")]
        return f"决定如何处理失败的步骤：{base.title_zh} / Decide about the failed step: {base.title_en}"
    return step


def _answers(record: IncidentRecord, plan: PlanOutline) -> list[StepAnswer]:
    """Every accepted answer (journal `step.answered`), in order, each field under its label."""
    out = []
    for e in record.entries("step.answered"):
        values = e.data.get("answer") or {}
        step = plan.steps.get(e.step or "")
        fields = {f.id: f for f in (step.fields if step else [])}
        rows = []
        for key, value in values.items():
            if key in _NOT_ANSWERS:
                continue
            f = fields.get(key)
            label = f"{f.label_zh} {f.label_en}" if f else _BUILT_IN_LABELS.get(key, "处理 Decision" if key == "decision" else key)
            if f and isinstance(value, str) and value in f.choices:
                shown = f"{value} ({f.choices[value]})"
            elif (key == "answered_at" or (f and f.type == "datetime")) and isinstance(value, str):
                shown = _show_time(value)
            else:
                shown = _show(value)
            rows.append(FieldAnswer(field=key, label=label, value=value, shown=shown))
        out.append(StepAnswer(step=e.step or "", title=_title(plan, e.step or ""), at=e.at,
                              answered_by=e.actor or str(values.get("answered_by", "")), fields=rows))
    return out


def _show_time(value: str) -> str:
    try:
        return local_time(value)
    except ValueError:  # not a time after all: shown as it was answered
        return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "是 yes" if value else "否 no"
    return "—" if value is None else str(value)


def _documents(record: IncidentRecord, plan: PlanOutline) -> list[Document]:
    return [Document(step=sid, title=_title(plan, sid), document=str(result["document"]))
            for sid, result in record.steps.items() if isinstance(result, dict) and result.get("document")]


def _deadlines(record: IncidentRecord, plan: PlanOutline) -> list[DeadlineOutcome]:
    states = {"deadline.met": "met", "deadline.met-late": "met-late", "deadline.missed": "missed", "deadline.unmet": "unmet"}
    out = []
    ids = [d.id for d in plan.deadlines] or sorted({e.step for e in record.journal if e.kind in states and e.step})
    titles = {d.id: f"{d.title_zh} / {d.title_en}" for d in plan.deadlines}
    for did in ids:
        entries = [e for e in record.journal if e.step == did and e.kind in states]
        last = entries[-1] if entries else None  # missed, then met late: the last word counts
        out.append(DeadlineOutcome(id=did, title=titles.get(did, last.text if last else did),
                                   state=states[last.kind] if last else "not started",
                                   due=(next((e.data.get("due") for e in entries if e.data.get("due")), None)),
                                   at=last.at if last else None))
    return out


def _pages(record: IncidentRecord) -> list[Page]:
    out = []
    for e in record.journal:
        if e.kind in ("page.sent", "page.failed"):
            out.append(Page(at=e.at, step=e.step, person=e.data.get("person"), channel=e.data.get("channel"),
                            outcome=e.data.get("outcome") or e.kind.split(".")[1], error=e.data.get("error") or (e.text if e.kind == "page.failed" else None)))
        elif e.kind == "page.unreached":
            for person in e.data.get("people", []):
                out.append(Page(at=e.at, step=e.step, person=person, channel=None, outcome="unreached"))
    return out


# ---------------------------------------------------------------- finding


def build_timeline(flow_run_id: str, *, journal: list[Entry] | None = None,
                   history: list[TimelineEntry] | None = None) -> Timeline:
    """The timeline of a run: journal from the argument, the archive or Prefect's events; Prefect's history live,
    or from `history` (the archived copy) when the run is gone from Prefect."""
    record = find_record(flow_run_id)
    if journal is None:
        journal = record.journal if record else journal_from_events(flow_run_id)
    prefect_available = True
    try:
        live = prefect_history(flow_run_id)
    except ObjectNotFound:
        prefect_available = False
        live = history if history is not None else (record.history if record else [])
    return Timeline(flow_run_id=flow_run_id, runbook=record.runbook if record else None,
                    entries=merge(from_journal(journal), live), prefect_available=prefect_available)


class NoSuchIncident(LookupError):
    pass


def load_report(flow_run_id: str, runbook: Runbook | None = None) -> IncidentReport:
    """From the archive if it is there (works after the run is deleted from Prefect), else from Prefect.

    `runbook` gives the labels for a run not archived; by default the runbook file named after the run's flow."""
    record = find_record(flow_run_id)
    if record is not None:
        return build_report(record, source="archive")
    return build_report(record_from_prefect(flow_run_id, runbook), source="prefect")


def record_from_prefect(flow_run_id: str, runbook: Runbook | None = None) -> IncidentRecord:
    """An IncidentRecord for a run that is not archived: the run, its journal (events) and its report artifacts."""
    with sync_client() as client:
        try:
            run = client.read_flow_run(UUID(str(flow_run_id)))
        except (ObjectNotFound, ValueError):
            raise NoSuchIncident(f"no incident {flow_run_id}: not in the archive, not in Prefect") from None
        flow_name = client.read_flow(run.flow_id).name
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    journal = journal_from_events(flow_run_id)
    plan, title = (outline(runbook), (runbook.title.zh, runbook.title.en)) if runbook else _plan_of(flow_name)
    started = next((e for e in journal if e.kind == "incident.started"), None)
    closed = next((e for e in journal if e.kind == "incident.closed"), None)
    graded = [e for e in journal if e.kind in ("severity.graded", "severity.kept")]
    steps: dict[str, dict[str, Any]] = {}
    for art in artifacts:  # report steps publish their document as `<runbook>-<step>`
        step = (art.key or "").removeprefix(f"{flow_name}-")
        if art.type == "markdown" and art.key and step in plan.steps and plan.steps[step].kind == "report":
            steps[step] = {"status": "done", "document": art.data}
    params = run.parameters or {}
    now = datetime.now(timezone.utc)
    return IncidentRecord(
        flow_run_id=str(run.id), runbook=flow_name, title_zh=title[0], title_en=title[1], label=params.get("incident"),
        drill=bool(params.get("drill")), severity=(graded[-1].data.get("severity") if graded else (started.data.get("severity") if started else params.get("severity"))),
        severity_label=None, severity_reason=(graded[-1].text if graded else None), params=params.get("parameters") or {},
        started=started.at if started else (run.start_time or run.created or now), ended=closed.at if closed else (run.end_time if run.state and run.state.is_final() else None),
        outcome=closed.data.get("outcome", "open") if closed else (run.state.name if run.state else "open"),
        message=closed.text if closed else (run.state.message or "" if run.state else ""), steps=steps, journal=journal,
        history=prefect_history(flow_run_id), plan=plan,
    )


def _plan_of(flow_name: str) -> tuple[PlanOutline, tuple[str, str]]:
    """The plan outline and title of the runbook a flow runs (its flow name is the runbook id)."""
    try:
        rb = load_file(get_settings().runbooks_dir / f"{flow_name}.yaml")
    except (RunbookError, OSError):
        return PlanOutline(), (flow_name, flow_name)
    return outline(rb), (rb.title.zh, rb.title.en)


# ---------------------------------------------------------------- rendering


def render(report: IncidentReport, fmt: str) -> str:
    if fmt == "json":
        return report.model_dump_json(indent=2)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format '{fmt}'; one of {', '.join(FORMATS)}")


@functools.lru_cache(maxsize=1)
def _environment():
    # HTML escapes what it shows; Markdown shows text as written (an entity such as &#39; would be read literally).
    env = Environment(loader=FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
                      autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False))
    env.filters["when"] = local_time
    env.filters["duration"] = human
    env.filters["iso"] = iso
    env.filters["cell"] = lambda s: str(s or "").replace("|", "\\|").replace("\n", " ")[:300]
    return env


TEMPLATES_USED = ("report.html.j2", "report.md.j2")


def load_templates() -> None:
    """Compile the report's templates now (the warm parent does, app/warm_up.py): each incident renders both as it
    closes, and compiling them costs more than rendering. Jinja reloads a template whose file changed since."""
    for name in TEMPLATES_USED:
        _environment().get_template(name)


def render_html(report: IncidentReport) -> str:
    return _environment().get_template("report.html.j2").render(r=report, rows=_rows(report))


def render_markdown(report: IncidentReport) -> str:
    return _environment().get_template("report.md.j2").render(r=report, rows=_rows(report))


def _rows(report: IncidentReport) -> list[TimelineEntry]:
    return report.timeline.entries

