"""Our own JSON shape, for senders that are neither Alertmanager nor Grafana
(a script, a building-management system, a ticket form).

Either one alert object or ``{"alerts": [...]}``. Each alert::

    {
      "status": "firing",                 # or resolved (also: ok, problem, alerting, recovered...)
      "title": "HIS database down",       # becomes labels.alertname unless labels has one
      "labels": {"site": "main", "severity": "critical"},
      "annotations": {"summary": "..."},
      "severity": "critical",             # optional; else labels.severity
      "starts_at": "2024-05-01T08:00:00+08:00",   # optional; default: when we received it
      "ends_at": null,
      "fingerprint": "his-db",            # optional; default: hash of the labels
      "group": "his-outage-2024-05-01",   # optional; alerts with one group are one incident
      "url": "https://monitor.example/his"
    }
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from integrations.alerts.base import AlertSource, need_alert_list, need_object, optional_text, parse_time, register
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity, normalise_status, string_map

FIELDS = {"status", "title", "labels", "annotations", "severity", "starts_at", "ends_at", "fingerprint", "group", "url"}


@register
class GenericSource(AlertSource):
    name = "generic"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        envelope = need_object(body, "a generic alert")
        if "alerts" in envelope:
            return envelope, need_alert_list(envelope)
        return {}, [envelope]

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
        unknown = sorted(set(raw) - FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; a generic alert may have {', '.join(sorted(FIELDS))}")
        if "status" not in raw:
            raise ValueError("'status' is missing; send 'firing' or 'resolved'")
        try:
            labels = string_map(raw.get("labels"))
        except ValueError as exc:
            raise ValueError(f"labels: {exc}") from None
        title = optional_text(raw.get("title"), "title")
        if title and "alertname" not in labels:
            labels["alertname"] = title
        if not labels:
            raise ValueError("an alert needs 'labels' or a 'title' so it can be routed")
        status = normalise_status(raw["status"])
        starts_at = parse_time(raw.get("starts_at"), "starts_at")
        if starts_at is None and status == "firing":
            starts_at = datetime.now(timezone.utc)
        severity_word = raw.get("severity", labels.get("severity"))
        if severity_word is not None and normalise_severity(severity_word) is None:
            raise ValueError(f"severity {severity_word!r} is not known; use critical, high, warning or info")
        return Alert(
            status=status,
            labels=labels,
            annotations=raw.get("annotations"),
            starts_at=starts_at,
            ends_at=parse_time(raw.get("ends_at"), "ends_at"),
            fingerprint=optional_text(raw.get("fingerprint"), "fingerprint") or label_fingerprint(labels),
            group_key=optional_text(raw.get("group"), "group"),
            source=self.name,
            source_url=optional_text(raw.get("url"), "url"),
            severity=normalise_severity(severity_word),
        )
