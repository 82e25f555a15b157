"""The normalised alert every source is turned into.

Routing, the intake ledger and the runbooks only ever see this shape, so a new
alert source is one parser and nothing else. Status and severity words differ
between tools; the maps below are the one place that says how they translate.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Status = Literal["firing", "resolved"]

# Words sources use for an alert's state -> ours. Anything else is refused, so a
# typo in a generic sender is an error rather than a silently ignored alert.
STATUS_MAP: dict[str, Status] = {
    "firing": "firing",
    "alerting": "firing",
    "problem": "firing",
    "triggered": "firing",
    "open": "firing",
    "resolved": "resolved",
    "ok": "resolved",
    "normal": "resolved",
    "recovered": "resolved",
    "closed": "resolved",
}

# Severity words seen in the wild (Prometheus conventions, Grafana, Zabbix-like
# tools) -> our four grades. Routes map these four to a runbook's own levels.
SEVERITIES = ("critical", "high", "warning", "info")
SEVERITY_MAP: dict[str, str] = {
    "critical": "critical", "crit": "critical", "page": "critical", "disaster": "critical",
    "emergency": "critical", "fatal": "critical", "p1": "critical",
    "high": "high", "major": "high", "error": "high", "err": "high", "p2": "high",
    "warning": "warning", "warn": "warning", "minor": "warning", "average": "warning",
    "medium": "warning", "p3": "warning",
    "info": "info", "information": "info", "informational": "info", "low": "info",
    "notice": "info", "none": "info", "p4": "info", "p5": "info",
}


def normalise_status(value: Any) -> Status:
    if value is None:
        raise ValueError("'status' is missing; send 'firing' or 'resolved'")
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in STATUS_MAP:
        raise ValueError(f"status {value!r} is not one of {sorted(STATUS_MAP)}; send 'firing' or 'resolved'")
    return STATUS_MAP[text]


def normalise_severity(value: Any) -> str | None:
    """Our grade for a source's severity word, or None when it has none we know."""
    if not isinstance(value, str):
        return None
    return SEVERITY_MAP.get(value.strip().lower())


def label_fingerprint(labels: dict[str, str]) -> str:
    """Stable id of a label set, for sources that send no fingerprint of their own."""
    canonical = json.dumps(labels, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def string_map(value: Any) -> dict[str, str]:
    """Labels and annotations are text; numbers and booleans are accepted and written as text."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be an object of name: text pairs, not {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        elif not isinstance(v, str):
            raise ValueError(f"value of '{k}' must be text, not {type(v).__name__}")
        out[str(k)] = v
    return out


class Alert(BaseModel):
    """One alert, whatever sent it."""

    model_config = ConfigDict(extra="forbid")

    status: Status = Field(description="firing or resolved.")
    labels: dict[str, str] = Field(default_factory=dict, description="Identifying labels (alertname, instance, severity...).")
    annotations: dict[str, str] = Field(default_factory=dict, description="Descriptive text (summary, description, runbook_url...).")
    starts_at: datetime | None = Field(None, description="When the alert started firing.")
    ends_at: datetime | None = Field(None, description="When it resolved (None while firing).")
    fingerprint: str = Field(description="Stable id of this alert's label set.")
    group_key: str | None = Field(None, description="The sender's notification group; one group is one incident.")
    source: str = Field(description="Which parser read it: alertmanager, grafana, generic.")
    source_url: str | None = Field(None, description="Link back to the rule or graph that fired.")
    severity: str | None = Field(None, description=f"Normalised severity: one of {', '.join(SEVERITIES)}, or None.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Source-specific fields kept for the timeline (Grafana values, dashboard links...).")

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _string_map(cls, value: Any) -> dict[str, str]:
        return string_map(value)

    @property
    def name(self) -> str:
        return self.labels.get("alertname") or self.annotations.get("summary") or self.fingerprint

    @property
    def group(self) -> str:
        """What makes alerts one incident: the sender's group, else the alert itself."""
        return f"{self.source}:{self.group_key or 'fp:' + self.fingerprint}"
