"""Working-day deadlines against the 2026 calendar the State Council published.

The dates were checked against chinesecalendar 1.11's data before being written
here: National Day (and Mid-Autumn) 2026 is Oct 1–7 off, with the adjusted
working days Sunday Sep 20 and Saturday Oct 10; Mid-Autumn is Sep 25–27 off.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import chinese_calendar
import pytest

from runbooks.workdays import CHINA, add_working_days, is_working_day


def at(y: int, m: int, d: int, hh: int = 10) -> datetime:
    return datetime(y, m, d, hh, 0, tzinfo=CHINA)


def end_of(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 23, 59, 59, tzinfo=CHINA)


def test_the_package_knows_the_2026_national_day_holiday_and_its_adjusted_days():
    for day in range(1, 8):
        assert not is_working_day(date(2026, 10, day)), f"Oct {day} 2026 is a holiday"
        assert chinese_calendar.get_holiday_detail(date(2026, 10, day)) == (True, chinese_calendar.Holiday.national_day.value)
    assert date(2026, 9, 20).weekday() == 6 and is_working_day(date(2026, 9, 20)), "Sun Sep 20 2026 is worked"
    assert date(2026, 10, 10).weekday() == 5 and is_working_day(date(2026, 10, 10)), "Sat Oct 10 2026 is worked"
    assert not is_working_day(date(2026, 10, 11)), "Sun Oct 11 2026 is an ordinary Sunday"
    assert [is_working_day(date(2026, 9, d)) for d in (25, 26, 27)] == [False, False, False], "Mid-Autumn"


def test_a_deadline_across_national_day_skips_the_holiday_and_counts_the_adjusted_saturday():
    # Closed Wed Sep 30: the 1st working day after is Thu Oct 8, the 3rd is Sat Oct 10 (adjusted), the 4th Mon Oct 12.
    assert add_working_days(at(2026, 9, 30), 1) == end_of(2026, 10, 8)
    assert add_working_days(at(2026, 9, 30), 3) == end_of(2026, 10, 10)
    assert add_working_days(at(2026, 9, 30), 4) == end_of(2026, 10, 12)
    # The plans' "5 working days": from Tue Sep 29 it is Sep 30, Oct 8, 9, 10, 12.
    assert add_working_days(at(2026, 9, 29), 5) == end_of(2026, 10, 12)


def test_an_adjusted_working_sunday_counts_before_the_holidays():
    # From Fri Sep 18: Sat 19 is off, Sun 20 is worked, so one working day ends on Sunday.
    assert add_working_days(at(2026, 9, 18), 1) == end_of(2026, 9, 20)
    # From Thu Sep 24: Mid-Autumn Sep 25–27, then Mon 28, Tue 29, Wed 30, then National Day to Thu Oct 8.
    assert add_working_days(at(2026, 9, 24), 4) == end_of(2026, 10, 8)


def test_working_days_are_counted_in_china_time_not_utc():
    # 17:00 UTC on Wed Sep 30 is already Thu Oct 1 in Beijing: the counting starts from the holiday.
    late_utc = datetime(2026, 9, 30, 17, 0, tzinfo=timezone.utc)
    assert late_utc.astimezone(CHINA).date() == date(2026, 10, 1)
    assert add_working_days(late_utc, 1) == end_of(2026, 10, 8)
    assert add_working_days(datetime(2026, 9, 30, 15, 0, tzinfo=timezone.utc), 1) == end_of(2026, 10, 8)


@pytest.mark.parametrize("start, days, due", [
    (at(2026, 10, 9), 1, end_of(2026, 10, 10)),   # Friday -> the adjusted Saturday
    (at(2026, 10, 10), 1, end_of(2026, 10, 12)),  # the adjusted Saturday itself does not count; Sunday is off
    (at(2026, 10, 2), 1, end_of(2026, 10, 8)),    # from inside the holiday
])
def test_around_the_adjusted_saturday(start, days, due):
    assert add_working_days(start, days) == due
    assert add_working_days(start, days) - start < timedelta(days=8)


def near(a, b) -> bool:  # real time is plan time divided by the scale: microseconds are rounded
    return abs(a - b) < timedelta(milliseconds=1)


def _drill_at(clock: datetime | None, started: datetime, time_scale: float):
    from integrations.contacts import load_directory
    from integrations.site import load_site
    from runbooks.loader import load_file
    from runbooks.settings import get_settings
    from tasks.incident import Incident

    settings = get_settings()
    rb = load_file(settings.runbooks_dir / "hospital-his-outage.yaml", load_directory(settings.contacts_file))
    return Incident(rb, params={}, severity="1", drill=True, time_scale=time_scale, auto=True, answers={}, alert=None,
                    flow_run_id="clock-test", directory=load_directory(settings.contacts_file),
                    site=load_site(settings.site_file), started=started, clock=clock)


def test_a_drill_counts_calendar_days_on_its_own_clock_not_the_hour_it_runs():
    from flows.time_rules import due

    late = datetime(2026, 11, 30, 23, 50, tzinfo=CHINA)  # the suite happens to run ten minutes before midnight
    dl = {"same": "important-data-same-day", "next": "all-data-next-day"}
    for clock in (None, datetime(2026, 11, 30, 9, 0, tzinfo=CHINA)):
        inc = _drill_at(clock, late, time_scale=600)
        inc.finished_at["confirm-recovery"] = late + timedelta(seconds=10)  # 100 plan minutes after the start
        same = due(inc, next(d for d in inc.runbook.deadlines if d.id == dl["same"]))
        following = due(inc, next(d for d in inc.runbook.deadlines if d.id == dl["next"]))
        if clock is None:  # the plan's clock is the real one, scaled: 23:50 + 100 min is 01:30 the next day
            assert inc.plan_time(inc.finished_at["confirm-recovery"]) == datetime(2026, 12, 1, 1, 30, tzinfo=CHINA)
            assert near(inc.plan_time(same), end_of(2026, 12, 1))
        else:  # played from 09:00: the recovery is at 10:40 and "the same day" is 13 h 20 min of plan time later
            assert inc.plan_time(inc.finished_at["confirm-recovery"]) == datetime(2026, 11, 30, 10, 40, tzinfo=CHINA)
            assert near(inc.plan_time(same), end_of(2026, 11, 30))
            assert (same - inc.finished_at["confirm-recovery"]).total_seconds() == pytest.approx((13 * 3600 + 19 * 60 + 59) / 600)
        assert near(inc.plan_time(following) - inc.plan_time(same), timedelta(days=1))


def test_a_drill_clock_without_a_zone_is_china_time():
    from tasks.incident import plan_clock

    assert plan_clock("2026-11-30T09:00") == datetime(2026, 11, 30, 9, 0, tzinfo=CHINA)
    assert plan_clock("2026-11-30T01:00+00:00") == datetime(2026, 11, 30, 9, 0, tzinfo=CHINA)
    assert plan_clock(None) is None and plan_clock("") is None
