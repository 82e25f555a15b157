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
SOURCE = Path("/work/shared/seeds/emergency-plans.zh.txt")


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
]

_COMPARISON = re.compile(r"(\w+)\s*(>=|<=|==|!=|>|<)\s*(-?\d[\d_]*(?:\.\d+)?)")


def comparisons(condition: str) -> set[tuple[str, str, float]]:
    """`steps.assess.interruption_hours > 1 and params.x <= 2.5` -> {('interruption_hours', '>', 1.0), ('x', '<=', 2.5)}."""
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


def test_comparisons_parser():
    assert comparisons("steps.assess.interruption_hours > 1 and steps['x'].y <= 2.5") == {("interruption_hours", ">", 1.0), ("y", "<=", 2.5)}
    assert comparisons("params.city_population > 1_000_000") == {("city_population", ">", 1_000_000.0)}

