"""PagerDuty Events API v2 (``POST /v2/enqueue``), the format Zabbix, Datadog, Uptime Kuma,
Checkmk, Nagios and many other tools already send.

One event per request::

    {"routing_key": "...", "event_action": "trigger" | "acknowledge" | "resolve",
     "dedup_key": "...",                       # the alert's identity; generated for a trigger without one
     "payload": {"summary": "...", "source": "...", "severity": "critical|error|warning|info",
                 "timestamp": "...", "component": "...", "group": "...", "class": "...",
                 "custom_details": {...}},      # payload is required for trigger only
     "client": "...", "client_url": "...", "links": [...], "images": [...]}

A trigger becomes a firing alert whose labels are ``alertname`` (the summary), ``summary``,
``source``, ``severity``, ``component``, ``group``, ``class`` and every top-level key of
``custom_details`` (text as is, numbers and booleans as text, nested values as compact JSON),
so routes match on them like on any label. The ``dedup_key`` is the alert group: acknowledge
and resolve events reach whatever incident the trigger with that key started, whatever their
payload says. ``routing_key`` is the sender's secret and is never kept.
See https://developer.pagerduty.com/docs/send-alert-event
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from integrations.alerts.base import AlertSource, PayloadError, need_object, optional_text, parse_time, register
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity

ACTIONS = {"trigger": "firing", "acknowledge": "firing", "resolve": "resolved"}
SEVERITIES = ("critical", "error", "warning", "info")
PAYLOAD_LABELS = ("summary", "source", "severity", "component", "group", "class")
KEPT = ("client", "client_url", "links", "images")


def generated_dedup_key() -> str:
    """What PagerDuty makes up for a trigger without a dedup_key: 32 hex digits."""
    return uuid.uuid4().hex


@register
class PagerDutySource(AlertSource):
    name = "pagerduty"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        event = need_object(body, "a PagerDuty event")
        if "event_action" not in event:
            raise PayloadError("'event_action' is missing; send trigger, acknowledge or resolve")
        return event, [event]

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
        action = raw.get("event_action")
        if action not in ACTIONS:
            raise ValueError(f"event_action {action!r} is not one of trigger, acknowledge, resolve")
        routing_key = raw.get("routing_key")
        if routing_key is not None and not isinstance(routing_key, str):
            raise ValueError(f"'routing_key' must be text, not {type(routing_key).__name__}")
        dedup_key = optional_text(raw.get("dedup_key"), "dedup_key")
        if dedup_key is None and action != "trigger":
            raise ValueError(f"'dedup_key' is missing; a {action} event names the alert it is about by its dedup_key")
        dedup_key = dedup_key or generated_dedup_key()
        payload = raw.get("payload")
        if action == "trigger" or payload is not None:
            payload = need_payload(payload)
        extra: dict[str, Any] = {"event_action": action, "dedup_key": dedup_key}
        for key in KEPT:
            if raw.get(key) not in (None, "", []):
                extra[key] = raw[key]
        if payload and payload.get("custom_details") is not None:
            extra["custom_details"] = payload["custom_details"]
        labels = labels_of(payload) if payload else {}
        timestamp = parse_time(payload.get("timestamp"), "payload.timestamp") if payload else None
        return Alert(
            status=ACTIONS[action],
            labels=labels,
            annotations={"summary": payload["summary"]} if payload else {},
            starts_at=timestamp or (datetime.now(timezone.utc) if action == "trigger" else None),
            fingerprint=label_fingerprint({"dedup_key": dedup_key}),
            group_key=dedup_key,
            source=self.name,
            source_url=optional_text(raw.get("client_url"), "client_url"),
            severity=normalise_severity(labels.get("severity")),
            extra=extra,
        )

    # PagerDuty's own answers, so its senders log what they expect.

    def answer(self, answer: dict[str, Any], alerts: list[Alert]) -> dict[str, Any]:
        dedup_key = alerts[0].group_key if alerts else None
        return {"status": "success", "message": "Event processed", "dedup_key": dedup_key, **answer}

    def refusal(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        rejected = extra.get("rejected") or []
        errors = [r["error"] for r in rejected] or [message]
        words = {400: ("invalid event", "Event object is invalid"), 422: ("invalid event", "Event object is invalid"),
                 401: ("unauthorized", "Unauthorized"), 413: ("invalid event", "Request too large")}
        state, title = words.get(status, ("error", message))
        return {"status": state, "message": title, "errors": errors, "error": message, **extra}

    def refusal_status(self, status: int) -> int:
        """PagerDuty answers every bad event 400; senders retry nothing below 429."""
        return 400 if status == 422 else status


def need_payload(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise ValueError(f"'payload' must be an object with summary, source and severity, not {type(payload).__name__}")
    for key in ("summary", "source"):
        if not optional_text(payload.get(key), f"payload.{key}"):
            raise ValueError(f"'payload.{key}' is missing; a trigger needs summary, source and severity")
    severity = payload.get("severity")
    if severity not in SEVERITIES:
        raise ValueError(f"payload.severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    for key in ("component", "group", "class"):
        optional_text(payload.get(key), f"payload.{key}")
    return payload


def labels_of(payload: dict) -> dict[str, str]:
    """The payload's fields and custom details as labels; the payload's own fields win a clash."""
    labels: dict[str, str] = {}
    details = payload.get("custom_details")
    if isinstance(details, dict):
        for key, value in details.items():
            labels[str(key)] = label_text(value)
    elif details is not None:
        labels["details"] = label_text(details)
    for key in PAYLOAD_LABELS:
        if payload.get(key) not in (None, ""):
            labels[key] = payload[key]
    labels["alertname"] = payload["summary"]
    return labels


def label_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or value is None:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
