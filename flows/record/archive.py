"""The incident archive: every finished incident as a JSON record and an HTML report on disk.

Prefect prunes events after a week and runs can be deleted; the archive is what
the leadership gets handed and what `runbook report` reads back. So a record
carries everything the report needs without Prefect or the runbook file: the
journal, Prefect's history of the run (`history`) and an outline of the plan
(step titles, form field labels, deadlines) as it was when the incident ran.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.incident import Incident
from tasks.journal import Entry
from flows.record.timeline import TimelineEntry, journal_from_events
from runbooks.model import Runbook
from runbooks.settings import get_settings

logger = logging.getLogger("runbook.archive")


class FieldOutline(BaseModel):
    id: str
    label_zh: str
    label_en: str
    type: str | None = Field(None, description="The field's type (yes_no, choice, text, number, integer, datetime); none in older records.")
    choices: dict[str, str] = Field(default_factory=dict, description="Choice value -> its label, both languages.")


class StepOutline(BaseModel):
    id: str
    kind: str
    title_zh: str
    title_en: str
    fields: list[FieldOutline] = Field(default_factory=list)


class RuleOutline(BaseModel):
    id: str
    title_zh: str
    title_en: str


class PlanOutline(BaseModel):
    """What the report needs of the runbook, frozen at the time of the incident (the YAML may change later)."""

    version: int = 1
    lead: str | None = None
    steps: dict[str, StepOutline] = Field(default_factory=dict)
    deadlines: list[RuleOutline] = Field(default_factory=list)
    thresholds: list[RuleOutline] = Field(default_factory=list)


def outline(runbook: Runbook) -> PlanOutline:
    steps = {}
    for step, _where in runbook.all_steps():
        fields = [FieldOutline(id=f.id, label_zh=f.label.zh, label_en=f.label.en, type=f.type,
                               choices={c.value: f"{c.label.zh} {c.label.en}" for c in f.choices or []})
                  for f in getattr(step, "fields", None) or []]
        steps[step.id] = StepOutline(id=step.id, kind=step.kind, title_zh=step.title.zh, title_en=step.title.en, fields=fields)
    rule = lambda r: RuleOutline(id=r.id, title_zh=r.title.zh, title_en=r.title.en)  # noqa: E731
    return PlanOutline(version=runbook.version, lead=runbook.lead, steps=steps,
                       deadlines=[rule(d) for d in runbook.deadlines], thresholds=[rule(t) for t in runbook.thresholds])


class IncidentRecord(BaseModel):
    flow_run_id: str
    runbook: str
    title_zh: str
    title_en: str
    label: str | None = None
    drill: bool
    severity: str | None
    severity_label: str | None = None
    severity_reason: str | None = None
    params: dict[str, Any]
    started: datetime
    ended: datetime | None = Field(None, description="When it closed; none while the incident is still open (waiting).")
    outcome: str
    message: str
    steps: dict[str, dict[str, Any]] = Field(description="Every step's result and answers, by step id.")
    journal: list[Entry]
    history: list[TimelineEntry] = Field(default_factory=list, description="Prefect's history of the run when it ended.")
    plan: PlanOutline = Field(default_factory=PlanOutline, description="The runbook's titles and labels at the time.")

    def kinds(self) -> list[str]:
        return [e.kind for e in self.journal]

    def entries(self, kind: str) -> list[Entry]:
        return [e for e in self.journal if e.kind == kind]


def archive_dir() -> Path:
    return get_settings().incidents_dir


def record_of(inc: Incident, outcome: str, message: str, history: list[TimelineEntry] | None = None) -> IncidentRecord:
    return IncidentRecord(
        flow_run_id=inc.id, runbook=inc.runbook.id, title_zh=inc.runbook.title.zh, title_en=inc.runbook.title.en,
        label=inc.label, drill=inc.drill, severity=inc.severity, severity_label=inc.level_label(),
        severity_reason=inc.severity_reason, params=json.loads(json.dumps(inc.params, default=str)),
        started=inc.started, ended=datetime.now(timezone.utc), outcome=outcome, message=message,
        steps=json.loads(json.dumps(inc.steps, default=str)), journal=earlier_attempts(inc) + list(inc.journal),
        history=history or [], plan=outline(inc.runbook),
    )


def earlier_attempts(inc: Incident) -> list[Entry]:
    """Journal entries of earlier attempts of this run (a crashed worker, a suspended wait), read back from its events.

    Each attempt keeps its journal in memory; the archive of the attempt that finishes must still tell the whole story.
    """
    if not inc.journal:
        return []
    first = inc.journal[0].at
    try:
        return [e for e in journal_from_events(inc.id) if e.at < first]
    except Exception as exc:  # the record is still worth writing with this attempt's journal alone
        logger.warning("could not read earlier attempts of %s: %s", inc.id, exc)
        return []


def write_record(record: IncidentRecord, html: str | None = None) -> Path:
    """Write `<runbook>/<start>-<run id>.json` and, when given, the `.html` report beside it; each file atomically."""
    folder = archive_dir() / record.runbook
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.started.strftime('%Y%m%dT%H%M%S')}-{record.flow_run_id}.json"
    _write(path, record.model_dump_json(indent=2))
    if html is not None:
        _write(path.with_suffix(".html"), html)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def record_path(flow_run_id: str) -> Path | None:
    return next(iter(archive_dir().glob(f"*/*-{flow_run_id}.json")), None)


def find_record(flow_run_id: str) -> IncidentRecord | None:
    path = record_path(flow_run_id)
    return IncidentRecord.model_validate_json(path.read_text(encoding="utf-8")) if path else None


def all_records() -> list[IncidentRecord]:
    return sorted((IncidentRecord.model_validate_json(p.read_text(encoding="utf-8")) for p in archive_dir().glob("*/*.json")),
                  key=lambda r: r.started)
