"""What an alert source is, and the one registry of them.

A source reads one webhook body. Its envelope (the notification) must be right
or the whole body is refused; after that each alert in it stands alone, so one
malformed alert never costs the good ones sent beside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from integrations.alerts.model import Alert


class PayloadError(ValueError):
    """The body as a whole cannot be read; the sender should fix its payload."""


@dataclass
class ItemError:
    """One alert in an otherwise good body that could not be read."""

    index: int
    error: str


@dataclass
class ItemIgnored(ItemError):
    """One item that was read and means nothing to do (Grafana's legacy ``pending`` or ``paused``)."""


class NothingToDo(Exception):
    """Raised by ``parse_item`` for an item that is understood but starts and ends nothing; the message says why."""


class AlertSource(ABC):
    name: str = ""

    @abstractmethod
    def split(self, body: Any) -> tuple[dict, list[Any]]:
        """Check the envelope and return (envelope, raw alerts). Raise PayloadError if it is wrong."""

    @abstractmethod
    def parse_item(self, raw: Any, envelope: dict) -> Alert:
        """One raw alert -> Alert. Raise ValueError (or ValidationError) if it is wrong."""

    def parse_each(self, body: Any) -> list[Alert | ItemError]:
        """Every alert of the body, or the reason it could not be read, in order."""
        envelope, items = self.split(body)
        out: list[Alert | ItemError] = []
        for i, raw in enumerate(items):
            try:
                if not isinstance(raw, dict):
                    raise ValueError(f"an alert must be a JSON object, not {type(raw).__name__}")
                need_unicode(raw, "alert")
                alert = self.parse_item(raw, envelope)
                need_unicode(alert.model_dump(mode="python"), "alert (with its notification's fields)")
                out.append(alert)
            except NothingToDo as skip:
                out.append(ItemIgnored(i, str(skip)))
            except ValidationError as exc:
                out.append(ItemError(i, _explain(exc)))
            except (ValueError, TypeError) as exc:
                out.append(ItemError(i, str(exc)))
        return out

    # How answers look; a source whose senders expect their own wording overrides these.

    def answer(self, answer: dict[str, Any], alerts: list[Alert]) -> dict[str, Any]:
        """The body of a 202 (``accepted``, ``unrouted``, ``rejected``, ``ignored``)."""
        return answer

    def refusal(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        """The body of a refusal of the whole request."""
        return {"error": message, **extra}

    def refusal_status(self, status: int) -> int:
        return status

    def parse(self, body: Any) -> list[Alert]:
        """All alerts of the body; raises PayloadError naming the first bad one (ignored items are left out)."""
        alerts = []
        for item in self.parse_each(body):
            if isinstance(item, ItemIgnored):
                continue
            if isinstance(item, ItemError):
                raise PayloadError(f"alert #{item.index}: {item.error}")
            alerts.append(item)
        return alerts


SOURCES: dict[str, AlertSource] = {}


def register(cls: type[AlertSource]) -> type[AlertSource]:
    SOURCES[cls.name] = cls()
    return cls


def get_source(name: str) -> AlertSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"no alert source '{name}'; known: {', '.join(sorted(SOURCES))}") from None


# Helpers shared by the parsers.

def need_unicode(node: Any, where: str) -> None:
    """Refuse text that cannot be stored: JSON may carry a lone surrogate (``"\\ud800"``), which is no
    character and cannot be written as UTF-8. Checked per alert, so it costs only that alert."""
    for place, text in _texts(node, where):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start:exc.end].encode("ascii", "backslashreplace").decode("ascii")
            raise ValueError(f"{place} holds {bad}, a lone UTF-16 surrogate that is not a character; "
                             "send valid Unicode text") from None


def _texts(node: Any, where: str):
    stack = [(where, node)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, dict):
            for k, v in node.items():
                key = k if isinstance(k, str) else str(k)
                yield f"{where} key", key
                stack.append((f"{where}.{key.encode('utf-8', 'backslashreplace').decode('utf-8')}", v))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(node))

def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "alert"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def need_object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def need_group_key(envelope: dict) -> None:
    """Alertmanager and Grafana both name the group an alert belongs to; it must be text when given."""
    group_key = envelope.get("groupKey")
    if group_key is not None and not isinstance(group_key, str):
        raise PayloadError(f"'groupKey' must be text, not {type(group_key).__name__}")


def need_alert_list(envelope: dict, key: str = "alerts") -> list:
    if key not in envelope:
        raise PayloadError(f"'{key}' is missing; a notification carries its alerts in a list named '{key}'")
    items = envelope[key]
    if not isinstance(items, list):
        raise PayloadError(f"'{key}' must be a list of alerts, not {type(items).__name__}")
    if not items:
        raise PayloadError(f"'{key}' is empty; send at least one alert")
    return items


def optional_text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    return value


def parse_time(value: Any, what: str) -> datetime | None:
    """RFC 3339 text -> aware datetime. Go's zero time (year 1) means 'not set'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an RFC 3339 time like 2024-05-01T08:00:00Z, not {type(value).__name__}")
    text = value.strip()
    if text.startswith("0001-01-01"):
        return None
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    # Go writes up to 9 fractional digits; Python reads at most 6.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits > 6:
            text = f"{head}.{rest[:6]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an RFC 3339 time like 2024-05-01T08:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone; end it with Z or +08:00")
    return parsed
