"""Prometheus Alertmanager webhook, payload version 4.

One notification carries every alert of one group (``groupKey``), firing and
resolved mixed; Alertmanager re-sends the whole group every ``repeat_interval``.
See https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

from typing import Any

from integrations.alerts.base import (AlertSource, PayloadError, need_alert_list, need_group_key, need_object, optional_text,
                                      parse_time, register)
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity, normalise_status


@register
class AlertmanagerSource(AlertSource):
    name = "alertmanager"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        envelope = need_object(body, "an Alertmanager notification")
        version = envelope.get("version")
        if version is not None and str(version) != "4":
            raise PayloadError(f"webhook payload version {version!r} is not supported; Alertmanager 0.16 or later sends version 4")
        need_group_key(envelope)
        return envelope, need_alert_list(envelope)

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
        if "labels" not in raw:
            raise ValueError("'labels' is missing; every Alertmanager alert has labels")
        labels = raw.get("labels")
        alert = Alert(
            status=normalise_status(raw.get("status")),
            labels=labels,
            annotations=raw.get("annotations"),
            starts_at=parse_time(raw.get("startsAt"), "startsAt"),
            ends_at=parse_time(raw.get("endsAt"), "endsAt"),
            fingerprint="pending",
            group_key=envelope.get("groupKey"),
            source=self.name,
            source_url=optional_text(raw.get("generatorURL"), "generatorURL"),
            extra={k: envelope[k] for k in ("receiver", "externalURL") if isinstance(envelope.get(k), str)},
        )
        alert.fingerprint = optional_text(raw.get("fingerprint"), "fingerprint") or label_fingerprint(alert.labels)
        alert.severity = normalise_severity(alert.labels.get("severity"))
        return alert
