"""Prometheus Alertmanager webhook, payload version 4 (and version 3 of older releases: the same shape).

One notification carries every alert of one group (``groupKey``), firing and
resolved mixed; Alertmanager re-sends the whole group every ``repeat_interval``.
An alert without its own ``status`` takes the notification's.
See https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

from typing import Any

from integrations.alerts.base import (AlertSource, PayloadError, need_alert_list, need_group_key, need_object, optional_text,
                                      parse_time, register)
from integrations.alerts.model import Alert, label_fingerprint, normalise_severity, normalise_status


VERSIONS = ("3", "4")  # 3 is what releases before 0.16 send; the shape is the same


@register
class AlertmanagerSource(AlertSource):
    name = "alertmanager"

    def split(self, body: Any) -> tuple[dict, list[Any]]:
        envelope = need_object(body, "an Alertmanager notification")
        version = envelope.get("version")
        if version is not None and str(version) not in VERSIONS:
            raise PayloadError(f"webhook payload version {version!r} is not supported; Alertmanager sends version 4 "
                               "(releases before 0.16 send 3, also accepted)")
        need_group_key(envelope)
        return envelope, need_alert_list(envelope)

    def parse_item(self, raw: dict, envelope: dict) -> Alert:
        if "labels" not in raw:
            raise ValueError("'labels' is missing; every Alertmanager alert has labels")
        labels = raw.get("labels")
        if not isinstance(labels, dict):
            raise ValueError(f"'labels' must be an object of name: text pairs, not {type(labels).__name__}")
        alert = Alert(
            status=normalise_status(raw["status"] if raw.get("status") is not None else envelope.get("status")),
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
