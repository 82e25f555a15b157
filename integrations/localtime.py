"""Times as people read them: in the site's time zone (`time_zone` in config/site.yaml), named, to the second.

One spelling everywhere a person reads a time — reports, `runbook` output, pages,
forms: `2026-11-30 12:59:16 CST (UTC+08:00)`. What machines read (the journal, the
archive's JSON, run inputs, state messages) stays UTC ISO 8601.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from integrations.site import load_site
from runbooks.settings import get_settings


def site_zone() -> ZoneInfo:
    """The site's time zone (config/site.yaml `time_zone`; UTC when the site file names none)."""
    return load_site(get_settings().site_file).time_zone


def local_time(at: datetime | str | None, zone: ZoneInfo | None = None) -> str:
    """`2026-11-30 12:59:16 CST (UTC+08:00)`; '' for None. A time without a zone is taken as UTC, as we store them."""
    if at is None or at == "":
        return ""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    here = moment.astimezone(zone or site_zone())
    return f"{here:%Y-%m-%d %H:%M:%S} {zone_name(here)}"


def zone_name(here: datetime) -> str:
    """'CST (UTC+08:00)', 'UTC', or 'UTC+04:00' for a zone whose abbreviation is only a number."""
    offset = here.utcoffset() or timedelta(0)
    sign, rest = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    hours, minutes = divmod(int(rest.total_seconds()) // 60, 60)
    utc = f"UTC{sign}{hours:02d}:{minutes:02d}"
    abbreviation = here.tzname() or ""
    if abbreviation == "UTC" and not offset:
        return "UTC"
    return utc if not abbreviation or abbreviation[0] in "+-" else f"{abbreviation} ({utc})"
