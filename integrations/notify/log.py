"""The log channel: writes the page to the run log. Always works; useful in drills and tests."""

from __future__ import annotations

import logging

from integrations.notify.base import Channel, Message, register

logger = logging.getLogger("runbook.notify")


@register
class LogChannel(Channel):
    name = "log"

    def send(self, message: Message, to: str) -> str | None:
        logger.warning("PAGE to %s: %s\n%s", to, message.headline(), message.text)
        return None
