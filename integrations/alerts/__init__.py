"""Alert intake: sources turn webhooks into ``Alert``s, routes pick a runbook,
the spool and ledger start exactly one incident per alert group."""

from integrations.alerts import alertmanager, generic, grafana, pagerduty  # noqa: F401  (register the sources)
from integrations.alerts.base import SOURCES, AlertSource, ItemError, ItemIgnored, PayloadError, get_source, register
from integrations.alerts.model import Alert

__all__ = ["SOURCES", "Alert", "AlertSource", "ItemError", "ItemIgnored", "PayloadError", "get_source", "register"]
