"""Grafana unified alerting webhook contact point.

The same shape as Alertmanager's (Grafana embeds one) plus ``orgId``,
``state``, ``title``, ``message`` on the notification and ``values``,
``dashboardURL``, ``panelURL``, ``silenceURL``, ``imageURL`` on each alert.
Those extras are kept in ``Alert.extra`` for the incident timeline.
See https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/

Grafana's legacy (dashboard) alerting, still sent by Grafana before 9 and by
installs that never migrated, posts one rule per notification instead:
``ruleName``, ``ruleId``, ``ruleUrl``, ``state`` (alerting, ok, no_data,
paused, pending), ``evalMatches``, ``tags``, ``title``, ``message``,
``orgId``, ``dashboardId``, ``panelId``, ``imageUrl``. It becomes one alert
named after the rule, labelled with its tags, grouped by (org, rule).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from integrations.alerts.base import (AlertSource, NothingToDo, PayloadError, need_alert_list, need_group_key, need_object, optional_text,
                                      parse_time, register)
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity, normalise_status, string_map

ALERT_EXTRAS = ("dashboardURL", "panelURL", "silenceURL", "imageURL", "valueString")
ENVELOPE_EXTRAS = ("receiver", "externalURL", "orgId", "state", "title")

# Legacy alerting: rule state -> ours. pending (not yet for long enough) and paused (switched off)
# start and end nothing; no_data is a problem someone has to look at.
LEGACY_STATES = {"alerting": "firing", "no_data": "firing", "ok": "resolved", "pending": None, "paused": None}
LEGACY_MARKERS = ("ruleName", "ruleId", "evalMatches", "ruleUrl")
LEGACY_EXTRAS = ("orgId", "dashboardId", "panelId", "ruleId", "state", "title", "imageUrl")


@register
class GrafanaSource(AlertSource):
    name = "grafana"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        envelope = need_object(body, "a Grafana notification")
        org = envelope.get("orgId")
        if org is not None and (isinstance(org, bool) or not isinstance(org, int)):
            raise PayloadError(f"'orgId' must be a number, not {type(org).__name__}")
        if "alerts" not in envelope and any(k in envelope for k in LEGACY_MARKERS):
            return {**envelope, "legacy": True}, [envelope]
        need_group_key(envelope)
        return envelope, need_alert_list(envelope)

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
        if envelope.get("legacy"):
            return self.parse_legacy(raw)
        if "labels" not in raw:
            raise ValueError("'labels' is missing; every Grafana alert has labels")
        values = raw.get("values")
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"'values' must be an object of query ref: number, not {type(values).__name__}")
        for ref, number in (values or {}).items():
            if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise ValueError(f"values.{ref} must be a number, not {type(number).__name__}")
        extra: dict[str, Any] = {k: envelope[k] for k in ENVELOPE_EXTRAS if envelope.get(k) not in (None, "")}
        for key in ALERT_EXTRAS:
            if raw.get(key) not in (None, ""):
                extra[key] = optional_text(raw[key], key)
        if values:
            extra["values"] = values
        alert = Alert(
            status=normalise_status(raw.get("status")),
            labels=raw.get("labels"),
            annotations=raw.get("annotations"),
            starts_at=parse_time(raw.get("startsAt"), "startsAt"),
            ends_at=parse_time(raw.get("endsAt"), "endsAt"),
            fingerprint="pending",
            group_key=_group_key(envelope),
            source=self.name,
            source_url=optional_text(raw.get("generatorURL"), "generatorURL"),
            extra=extra,
        )
        alert.fingerprint = optional_text(raw.get("fingerprint"), "fingerprint") or label_fingerprint(alert.labels)
        alert.severity = normalise_severity(alert.labels.get("severity"))
        return alert


    def parse_legacy(self, raw: dict) -> Alert:
        state = raw.get("state")
        if not isinstance(state, str) or state not in LEGACY_STATES:
            raise ValueError(f"state {state!r} is not one of {', '.join(LEGACY_STATES)} (Grafana legacy alerting)")
        status = LEGACY_STATES[state]
        rule = optional_text(raw.get("ruleName"), "ruleName")
        if status is None:
            raise NothingToDo(f"rule {rule!r} is {state}: that starts and ends nothing")
        if not rule:
            raise ValueError("'ruleName' is missing; Grafana names the rule that fired there")
        rule_id = raw.get("ruleId")
        if rule_id is not None and (isinstance(rule_id, bool) or not isinstance(rule_id, (int, str))):
            raise ValueError(f"'ruleId' must be a number, not {type(rule_id).__name__}")
        try:
            labels = string_map(raw.get("tags"))
        except ValueError as exc:
            raise ValueError(f"tags: {exc}") from None
        labels.setdefault("alertname", rule)
        if state == "no_data":
            labels.setdefault("grafana_state", "no_data")
        matches = raw.get("evalMatches")
        if matches is not None and not isinstance(matches, list):
            raise ValueError(f"'evalMatches' must be a list, not {type(matches).__name__}")
        annotations = {k: optional_text(raw.get(k), k) for k in ("title", "message")}
        if annotations["message"] or annotations["title"]:
            annotations["summary"] = annotations["message"] or annotations["title"]
        extra: dict[str, Any] = {k: raw[k] for k in LEGACY_EXTRAS if raw.get(k) not in (None, "")}
        if matches:
            extra["evalMatches"] = matches
        org = raw.get("orgId")
        key = f"org{org}/legacy-rule/{rule_id if rule_id is not None else rule}" if org is not None \
            else f"legacy-rule/{rule_id if rule_id is not None else rule}"
        return Alert(
            status=status,
            labels=labels,
            annotations={k: v for k, v in annotations.items() if v},
            starts_at=datetime.now(timezone.utc) if status == "firing" else None,
            fingerprint=label_fingerprint({"grafana_legacy_rule": key}),
            group_key=key,
            source=self.name,
            source_url=optional_text(raw.get("ruleUrl"), "ruleUrl"),
            severity=normalise_severity(labels.get("severity")),
            extra=extra,
        )


def _group_key(envelope: dict) -> str | None:
    """Grafana's group key is only unique within an organisation."""
    key = envelope.get("groupKey")
    if not key:
        return None
    org = envelope.get("orgId")
    return f"org{org}/{key}" if org is not None else key
