"""The incident archive: every finished incident as a JSON record on disk.

Prefect prunes events after a week and runs can be deleted; the archive is what
the leadership gets handed and what `runbook report` reads back.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.incident import Entry, Incident
from runbooks.settings import get_settings


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
    ended: datetime
    outcome: str
    message: str
    steps: dict[str, dict[str, Any]] = Field(description="Every step's result and answers, by step id.")
    journal: list[Entry]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.journal]

    def entries(self, kind: str) -> list[Entry]:
        return [e for e in self.journal if e.kind == kind]


def archive_dir() -> Path:
    return get_settings().incidents_dir


def record_of(inc: Incident, outcome: str, message: str) -> IncidentRecord:
    return IncidentRecord(
        flow_run_id=inc.id, runbook=inc.runbook.id, title_zh=inc.runbook.title.zh, title_en=inc.runbook.title.en,
        label=inc.label, drill=inc.drill, severity=inc.severity, severity_label=inc.level_label(),
        severity_reason=inc.severity_reason, params=json.loads(json.dumps(inc.params, default=str)),
        started=inc.started, ended=datetime.now(timezone.utc), outcome=outcome, message=message,
        steps=json.loads(json.dumps(inc.steps, default=str)), journal=list(inc.journal),
    )


def archive_incident(inc: Incident, outcome: str, message: str) -> Path:
    record = record_of(inc, outcome, message)
    folder = archive_dir() / inc.runbook.id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{inc.started.strftime('%Y%m%dT%H%M%S')}-{inc.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def find_record(flow_run_id: str) -> IncidentRecord | None:
    for path in archive_dir().glob(f"*/*-{flow_run_id}.json"):
        return IncidentRecord.model_validate_json(path.read_text(encoding="utf-8"))
    return None


def all_records() -> list[IncidentRecord]:
    return sorted((IncidentRecord.model_validate_json(p.read_text(encoding="utf-8")) for p in archive_dir().glob("*/*.json")),
                  key=lambda r: r.started)
