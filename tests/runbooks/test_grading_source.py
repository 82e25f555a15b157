"""The numbers of the source plans, checked against the runbooks, so they cannot drift.

Each row quotes the source (shared/seeds/emergency-plans.zh.txt) and says where the number
lives in the runbook: a threshold's `after`, a deadline's `within`, or a comparison inside a
grading rule (`name op value`, e.g. `steps.assess.interruption_hours > 1` or
`params.deaths >= 200`). To add a plan, append rows; for example:

    Rule("grid-earthquake", "serious", "deaths", ">=", 200, "死亡200人以上"),
    Rule("grid-earthquake", "catastrophic", "deaths", ">", 1000, "死亡1000人以上"),
    Rule("grid-earthquake", "serious", "loss_gdp_pct", ">=", 1, "1%"),
    Rule("grid-earthquake", "serious", "magnitude", ">", 6.5, "6.5级"),
    Rule("grid-earthquake", "catastrophic", "city_population", ">", 1_000_000, "100万"),
    Threshold("payment-system-outage", "over-4h", "4h", "4小时"),

A quote is checked against the source text when the seeds folder is present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbooks.loader import load_file
from runbooks.model import parse_duration

ROOT = Path(__file__).resolve().parents[2]
# shared/ stands beside the checkout, for developers and for CI alike.
SOURCE = ROOT.parent / "shared" / "seeds" / "emergency-plans.zh.txt"


@dataclass(frozen=True)
class Threshold:
    runbook: str
    id: str
    after: str
    quote: str


@dataclass(frozen=True)
class Deadline:
    runbook: str
    id: str
    within: str
    quote: str


@dataclass(frozen=True)
class Rule:
    runbook: str
    level: str
    name: str
    op: str
    value: float
    quote: str


@dataclass(frozen=True)
class WorkingDays:
    """A deadline counted in Chinese working days, from a start (e.g. 'step:incident-closed')."""
    runbook: str
    id: str
    days: int
    start: str
    quote: str


@dataclass(frozen=True)
class Grade:
    """The level the grading rules give (first rule that holds, as a `grade` step does) for these parameters."""
    runbook: str
    params: tuple
    level: str
    quote: str


@dataclass(frozen=True)
class FieldDefault:
    """A form field whose default is a number the source gives (e.g. life jackets missing)."""
    runbook: str
    step: str
    field: str
    value: float
    quote: str


TABLE = [
    # plan 2 · police IT outage
    Rule("police-it-outage", "1", "interruption_hours", ">", 1, "业务中断1小时以上"),
    Rule("police-it-outage", "1", "expected_recovery_hours", ">", 4, "预计4小时以内无法恢复"),
    Rule("police-it-outage", "1", "infected_clients", ">=", 10, "感染客户端设备10台以上"),
    Rule("police-it-outage", "2", "expected_recovery_hours", "<=", 2, "预计在2小时以内恢复"),
    # plans 11/12 · hospital HIS outage
    Threshold("hospital-his-outage", "manual-after-30min", "30m", "30分钟内不能恢复"),
    Threshold("hospital-his-outage", "manual-after-6h", "6h", "6小时内不能恢复"),
    Threshold("hospital-his-outage", "manual-after-24h", "24h", "24小时以上不能恢复"),
    Deadline("hospital-his-outage", "fault-report-2-days", "2d", "故障排除后2天内"),
    # plan 1 · transport safety campaign
    Deadline("transport-safety-campaign", "inspection-window", "3d", "安全生产大排查时间:6月9日至11日"),
    FieldDefault("transport-safety-campaign", "inspect-water-transport", "iron_ferry_life_jackets_missing", 14, "需要补充14件救生衣,救生圈2只"),
    FieldDefault("transport-safety-campaign", "inspect-water-transport", "iron_ferry_life_rings_missing", 2, "需要补充14件救生衣,救生圈2只"),
    FieldDefault("transport-safety-campaign", "inspect-water-transport", "wooden_ferry_life_rings_missing", 6, "木质渡船需要补充6只救生圈"),
    # plan 3 · grid earthquake: the rule comparisons ...
    Rule("grid-earthquake", "serious", "deaths", ">=", 200, "人员死亡200人到1000人"),
    Rule("grid-earthquake", "catastrophic", "deaths", ">", 1000, "人员死亡数超过1000人"),
    Rule("grid-earthquake", "serious", "loss_gdp_pct", ">=", 1, "国内生产总值1~5%"),
    Rule("grid-earthquake", "catastrophic", "loss_gdp_pct", ">", 5, "国内生产总值5%以上"),
    Rule("grid-earthquake", "serious", "magnitude", ">", 6.5, "大于6.5级、小于7.0级"),
    Rule("grid-earthquake", "serious", "magnitude", "<", 7.0, "大于6.5级、小于7.0级"),
    Rule("grid-earthquake", "serious", "city_population", ">", 1_000_000, "在100万人口以上的大城市"),
    Rule("grid-earthquake", "serious", "city_population", ">=", 500_000, "在50万~100万人口的城市或地区发生7.0级以上的地震"),
    Rule("grid-earthquake", "serious", "city_population", "<=", 1_000_000, "在50万~100万人口的城市或地区发生7.0级以上的地震"),
    Rule("grid-earthquake", "catastrophic", "magnitude", ">=", 7.0, "在100万人口的大城市或地区发生7.0级以上的地震"),
    Rule("grid-earthquake", "catastrophic", "city_population", ">", 1_000_000, "在100万人口的大城市或地区发生7.0级以上的地震"),
    # ... and the levels they give at the boundaries
    Grade("grid-earthquake", (("deaths", 199),), "general", "人员死亡200人到1000人"),
    Grade("grid-earthquake", (("deaths", 200),), "serious", "人员死亡200人到1000人"),
    Grade("grid-earthquake", (("deaths", 1000),), "serious", "人员死亡200人到1000人"),
    Grade("grid-earthquake", (("deaths", 1001),), "catastrophic", "人员死亡数超过1000人"),
    Grade("grid-earthquake", (("loss_gdp_pct", 0.99),), "general", "国内生产总值1~5%"),
    Grade("grid-earthquake", (("loss_gdp_pct", 1),), "serious", "国内生产总值1~5%"),
    Grade("grid-earthquake", (("loss_gdp_pct", 5),), "serious", "国内生产总值1~5%"),
    Grade("grid-earthquake", (("loss_gdp_pct", 5.01),), "catastrophic", "国内生产总值5%以上"),
    Grade("grid-earthquake", (("magnitude", 6.5), ("city_population", 2_000_000)), "general", "大于6.5级、小于7.0级"),
    Grade("grid-earthquake", (("magnitude", 6.6), ("city_population", 2_000_000)), "serious", "大于6.5级、小于7.0级"),
    Grade("grid-earthquake", (("magnitude", 6.9), ("city_population", 1_000_000)), "general", "在100万人口以上的大城市"),
    Grade("grid-earthquake", (("magnitude", 7.0), ("city_population", 499_999)), "general", "在50万~100万人口的城市或地区发生7.0级以上的地震"),
    Grade("grid-earthquake", (("magnitude", 7.0), ("city_population", 500_000)), "serious", "在50万~100万人口的城市或地区发生7.0级以上的地震"),
    Grade("grid-earthquake", (("magnitude", 7.0), ("city_population", 1_000_000)), "serious", "在50万~100万人口的城市或地区发生7.0级以上的地震"),
    Grade("grid-earthquake", (("magnitude", 7.0), ("city_population", 1_000_001)), "catastrophic", "在100万人口的大城市或地区发生7.0级以上的地震"),
    # plan 6 · payment system outage
    Rule("payment-system-outage", "over-4h", "expected_recovery_hours", ">", 4, "恢复时间超过4小时"),
    Threshold("payment-system-outage", "four-hour-line", "4h", "恢复时间超过4小时"),
    Grade("payment-system-outage", (("expected_recovery_hours", 4),), "routine", "恢复时间超过4小时"),
    Grade("payment-system-outage", (("expected_recovery_hours", 4.01),), "over-4h", "恢复时间超过4小时"),
    Grade("payment-system-outage", (("expected_recovery_hours", 3.9), ("data_lost", True)), "data-loss", "恢复时间小于4小时,但有数据丢失"),
    Grade("payment-system-outage", (("expected_recovery_hours", 3.9), ("data_lost", False)), "routine", "恢复时间小于4小时,但有数据丢失"),
    # plan 10 · school food safety
    Deadline("school-food-safety", "initial-report-1h", "1h", "初次报告必须在事故发生1小时内"),
    WorkingDays("school-food-safety", "summary-report-5-working-days", 5, "step:incident-closed", "总结报告在事故处理结束后5个工作日内作出"),
]

_COMPARISON = re.compile(r"(\w+)\)*\s*(>=|<=|==|!=|>|<)\s*(-?\d[\d_]*(?:\.\d+)?)")  # `(answer or params.x) > 1` is x


def comparisons(condition: str) -> set[tuple[str, str, float]]:
    """`steps.assess.interruption_hours > 1 and (steps.q.x or params.x) <= 2.5` -> {('interruption_hours', '>', 1.0), ('x', '<=', 2.5)}."""
    return {(name, op, float(value.replace("_", ""))) for name, op, value in _COMPARISON.findall(condition)}


_cache: dict = {}


def runbook(rb_id: str):
    if rb_id not in _cache:
        path = ROOT / "runbooks" / f"{rb_id}.yaml"
        if not path.exists():
            pytest.skip(f"runbook {rb_id} is not written yet")
        _cache[rb_id] = load_file(path)
    return _cache[rb_id]


def _name(row) -> str:
    if isinstance(row, Grade):
        return f"{row.runbook}:grade:{','.join(f'{k}={v}' for k, v in row.params)}->{row.level}"
    if isinstance(row, FieldDefault):
        return f"{row.runbook}:default:{row.step}.{row.field}={row.value:g}"
    return f"{row.runbook}:{type(row).__name__.lower()}:{getattr(row, 'id', None) or f'{row.level}:{row.name}{row.op}{row.value:g}'}"


@pytest.mark.parametrize("row", TABLE, ids=_name)
def test_runbook_matches_source_number(row):
    rb = runbook(row.runbook)
    if isinstance(row, Threshold):
        th = {t.id: t for t in rb.thresholds}.get(row.id)
        assert th is not None, f"{row.runbook} has no threshold {row.id}; thresholds: {[t.id for t in rb.thresholds]}"
        assert th.after == parse_duration(row.after), f"{row.id}: after {th.after}, the source says {row.after} ({row.quote})"
    elif isinstance(row, Deadline):
        dl = {d.id: d for d in rb.deadlines}.get(row.id)
        assert dl is not None, f"{row.runbook} has no deadline {row.id}; deadlines: {[d.id for d in rb.deadlines]}"
        assert dl.within == parse_duration(row.within), f"{row.id}: within {dl.within}, the source says {row.within} ({row.quote})"
    elif isinstance(row, WorkingDays):
        dl = {d.id: d for d in rb.deadlines}.get(row.id)
        assert dl is not None, f"{row.runbook} has no deadline {row.id}; deadlines: {[d.id for d in rb.deadlines]}"
        assert (dl.working_days, dl.start) == (row.days, row.start), (
            f"{row.id}: {dl.working_days} working days from {dl.start}; the source says {row.days} from {row.start} ({row.quote})")
    elif isinstance(row, Grade):
        assert graded(rb, dict(row.params)) == row.level, f"{dict(row.params)} should be {row.level} ({row.quote})"
    elif isinstance(row, FieldDefault):
        field = next((f for f in getattr(rb.step(row.step), "fields", []) if f.id == row.field), None)
        assert field is not None, f"{row.runbook} step {row.step} has no field {row.field}"
        assert field.default == row.value, f"{row.step}.{row.field} defaults to {field.default}; the source says {row.value} ({row.quote})"
    else:
        rules = [r for r in rb.severity.rules if r.level == row.level]
        found = set().union(*(comparisons(r.when) for r in rules)) if rules else set()
        assert (row.name, row.op, float(row.value)) in found, (
            f"no level-{row.level} rule of {row.runbook} says `{row.name} {row.op} {row.value}` ({row.quote}); "
            f"its comparisons: {sorted(found)}")


@pytest.mark.skipif(not SOURCE.exists(), reason="the source plans are not on this machine")
@pytest.mark.parametrize("row", TABLE, ids=_name)
def test_quote_is_in_the_source(row):
    text = re.sub(r"\s+", "", SOURCE.read_text(encoding="utf-8"))
    assert row.quote in text


def graded(rb, params: dict) -> str:
    """What a `grade` step decides: the first rule that holds, else the default (parameters' defaults filled in)."""
    from runbooks.expressions import evaluate

    values = {name: p.default for name, p in rb.parameters.items()} | params
    context = {"params": values, "steps": {}, "severity": None, "alert": {}, "incident": {}}
    return next((r.level for r in rb.severity.rules if evaluate(r.when, context)), rb.severity.default)


def test_working_days_count_holidays_and_adjusted_weekends():
    """5 working days from the close, as the engine counts them (runbooks/workdays.py)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from runbooks.workdays import add_working_days

    china = ZoneInfo("Asia/Shanghai")
    # closed on Friday 2024-06-07 (Dragon Boat holiday 06-08..06-10): due end of Monday 06-17
    assert add_working_days(datetime(2024, 6, 7, 16, 0, tzinfo=china), 5) == datetime(2024, 6, 17, 23, 59, 59, tzinfo=china)
    # closed on 2024-09-30 (National Day 10-01..10-07, Saturday 10-12 is a working day): due end of Saturday 10-12
    assert add_working_days(datetime(2024, 9, 30, 10, 0, tzinfo=china), 5) == datetime(2024, 10, 12, 23, 59, 59, tzinfo=china)


def test_comparisons_parser():
    assert comparisons("steps.assess.interruption_hours > 1 and steps['x'].y <= 2.5") == {("interruption_hours", ">", 1.0), ("y", "<=", 2.5)}
    assert comparisons("params.city_population > 1_000_000") == {("city_population", ">", 1_000_000.0)}

