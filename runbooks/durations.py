"""Durations: how a runbook writes them (`30m`, `6h`, `1h30m`, `5d`) and how people read them (`30 min`, `6 小时`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNITS = {"en": ("d", "h", "min", "s"), "zh": ("天", "小时", "分钟", "秒")}


def parse_duration(value: Any) -> timedelta:
    """'30m', '6h', '1h30m', '5d', '45s' or a number of seconds -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.replace(" ", "").lower()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            return timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))
    raise ValueError(f"'{value}' is not a duration; write it like 45s, 30m, 6h, 1h30m or 5d")


def human(span: timedelta | float, language: str = "en") -> str:
    """'10 min', '6 h', '1 h 30 min', '2 d' (or '10 分钟', '6 小时'): a span as people say it, to the second."""
    seconds = round(span.total_seconds() if isinstance(span, timedelta) else span)
    days_unit, hours_unit, minutes_unit, seconds_unit = _UNITS["zh" if language == "zh" else "en"]
    if seconds and seconds % 86400 == 0 and seconds >= 2 * 86400:
        parts = [(seconds // 86400, days_unit)]
    else:
        parts = [(seconds // 3600, hours_unit), (seconds % 3600 // 60, minutes_unit), (seconds % 60, seconds_unit)]
    return " ".join(f"{n} {u}" for n, u in parts if n) or f"0 {seconds_unit}"


def working_days(days: int, language: str = "en") -> str:
    return f"{days} 个工作日" if language == "zh" else f"{days} working day{'s' if days != 1 else ''}"
