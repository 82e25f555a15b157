"""Grafana unified alerting webhook contact point.

The same shape as Alertmanager's (Grafana embeds one) plus ``orgId``,
``state``, ``title``, ``message`` on the notification and ``values``,
``dashboardURL``, ``panelURL``, ``silenceURL``, ``imageURL`` on each alert.
Those extras are kept in ``Alert.extra`` for the incident timeline.
See https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
"""

from __future__ import annotations

from typing import Any

from integrations.alerts.base import (AlertSource, PayloadError, need_alert_list, need_group_key, need_object, optional_text,
                                      parse_time, register)
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity, normalise_status

ALERT_EXTRAS = ("dashboardURL", "panelURL", "silenceURL", "imageURL", "valueString")
ENVELOPE_EXTRAS = ("receiver", "externalURL", "orgId", "state", "title")


@register
class GrafanaSource(AlertSource):
    name = "grafana"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        envelope = need_object(body, "a Grafana notification")
        org = envelope.get("orgId")
        if org is not None and (isinstance(org, bool) or not isinstance(org, int)):
            raise PayloadError(f"'orgId' must be a number, not {type(org).__name__}")
        need_group_key(envelope)
        return envelope, need_alert_list(envelope)

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
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


def _group_key(envelope: dict) -> str | None:
    """Grafana's group key is only unique within an organisation."""
    key = envelope.get("groupKey")
    if not key:
        return None
    org = envelope.get("orgId")
    return f"org{org}/{key}" if org is not None else key
