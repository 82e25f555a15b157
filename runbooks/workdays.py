"""Chinese working days, for deadlines such as "summary report within 5 working days".

Uses the maintained `chinesecalendar` package, which knows the public holidays
and the adjusted working weekends (调休) the State Council announces each year.
For a year it does not know yet, weekends are the only days off and a warning
is logged, since a deadline computed a little early is better than none.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

CHINA = ZoneInfo("Asia/Shanghai")
logger = logging.getLogger("runbook.workdays")


_uncovered: set[int] = set()  # years the holiday calendar lacks, said once each (the watcher asks five times a second)


def is_working_day(day: date) -> bool:
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        if day.year not in _uncovered:
            _uncovered.add(day.year)
            logger.warning("the holiday calendar does not cover %s yet; counting weekdays only", day.year)
        return day.weekday() < 5


def add_working_days(start: datetime, days: int) -> datetime:
    """End of the `days`-th working day after `start` (in China's time zone), as an aware datetime.

    The day of `start` itself does not count: an incident closed on Friday with
    5 working days to report is due at the end of the following Friday.
    """
    local = start.astimezone(CHINA)
    day, counted = local.date(), 0
    while counted < days:
        day += timedelta(days=1)
        if is_working_day(day):
            counted += 1
    return datetime.combine(day, time(23, 59, 59), tzinfo=CHINA)
