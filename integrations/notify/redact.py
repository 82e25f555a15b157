"""Keep secrets out of delivery records and logs.

Webhook robots (DingTalk, WeCom, Feishu) carry their credential in the URL, and
library exceptions like to quote the URL they failed on. Everything a channel
puts in a ChannelError message, and everything the dispatcher records or logs,
goes through `mask_url` / `scrub` first.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# A path segment this long made of token characters is a credential (Feishu hook ids, Slack hook paths).
_TOKEN_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{16,}$")
# Patterns that are secrets wherever they appear, even when we did not know the value.
_TOKEN_PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9\-]+"),                        # Slack tokens
    re.compile(r"(?i)((?:access_token|key|sign|token|secret|password)=)[^&\s\"']+"),
    re.compile(r"(?i)(authorization:\s*)(?:bearer|basic)?\s*\S+"),
    re.compile(r"(/hook/)[A-Za-z0-9_\-]{16,}"),                        # Feishu hook ids in a path
]

# Libraries that log request URLs (urllib3 at DEBUG logs "POST /robot/send?access_token=... 200").
LIBRARY_LOGGERS = ("urllib3.connectionpool", "twilio.http_client", "slack_sdk.web.base_client")


def mask_url(url: str) -> str:
    """The URL with every query value and every token-like path segment replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    path = "/".join(MASK if _TOKEN_SEGMENT.match(seg) else seg for seg in parts.path.split("/"))
    query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def scrub(text: str | None, secrets: list[str] | tuple[str, ...] = ()) -> str | None:
    """Replace known secret values and anything shaped like a credential by ***."""
    if text is None:
        return None
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _TOKEN_PATTERNS[0].sub(MASK, text)
    for pattern in _TOKEN_PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Scrub credential-shaped text from records of loggers we do not control."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def install_log_redaction(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
