"""Drills of police-it-outage (plan 2): levels 1/2/3, escalation records, contingency decision, user confirmation."""

from __future__ import annotations

import pytest

from runbooks.expressions import evaluate
from runbooks.loader import load_file
from runbooks.settings import get_settings
from tests.drill import drill, path, skipped

RB = "police-it-outage"


def assess(**values):
    base = {"scope": "车管所窗口 vehicle office windows", "impact": "interrupted", "main_business_affected": True,
            "interruption_hours": 1.5, "expected_recovery_hours": 6, "feature": "internal-network", "infected_clients": 0}
    return {"assess": {**base, **values}}


def test_level_1_major_fault_reported_by_the_leadership_with_written_report():
    answers = {
        **assess(),
        "record-discovery": {"discovered_at": "2024-05-01T08:10:00+08:00", "fault_time": "2024-05-01T08:00:00+08:00",
                             "discovering_unit": "车管科", "discoverer": "方科长", "initial_level": "1"},
        "leadership-reports": {"reporter": "蒋大队长", "reported_to": "支队科技科", "reported_at": "2024-05-01T08:30:00+08:00",
                               "content": "内部网络中断"},
    }
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert record.severity == "1"
    steps = path(record)
    assert steps.index("record-discovery") < steps.index("dispatch-staff") < steps.index("assess") < steps.index("grade")
    for step in ("notify-leadership", "leadership-reports", "contain-and-analyse", "business-plan-decision", "external-support",
                 "progress-report", "record-handling", "self-test", "user-confirmation", "written-report", "submit-report"):
        assert step in steps, step
    assert steps.index("self-test") < steps.index("user-confirmation") < steps.index("written-report")
    assert "department-reports" not in steps and "maintenance-log" not in steps
    esc = record.steps["leadership-reports"]
    assert (esc["reporter"], esc["reported_to"]) == ("蒋大队长", "支队科技科") and esc["reported_at"].startswith("2024-05-01")
    assert record.steps["record-discovery"]["discoverer"] == "方科长"
    assert "approval.approved" in record.kinds()


@pytest.mark.parametrize("values, level", [
    ({"feature": "none", "infected_clients": 10}, "1"),            # virus on 10 or more clients
    ({"feature": "none", "infected_clients": 9}, "2"),             # 9 clients is no level-1 feature
    ({"interruption_hours": 1}, "2"),                               # exactly 1 h is not "over 1 h"
    ({"expected_recovery_hours": 4}, "2"),                          # back within 4 h is not level 1
    ({"impact": "slower", "main_business_affected": False, "interruption_hours": 0, "expected_recovery_hours": 3,
      "feature": "none"}, "2"),                                     # slower, vehicle administration unaffected
    ({"impact": "interrupted", "interruption_hours": 0.5, "expected_recovery_hours": 1.5, "feature": "none"}, "2"),  # back within 2 h
    ({"impact": "none", "interruption_hours": 0, "expected_recovery_hours": 0.5, "feature": "none"}, "3"),  # latent risk
])
def test_grading_boundaries(values, level):
    """The grading rules alone (first rule that holds, as the `grade` step applies them), without a run."""
    rb = load_file(get_settings().runbooks_dir / f"{RB}.yaml")
    context = {"params": {}, "severity": None, "steps": assess(**values), "incident": {}, "alert": {}}
    graded = next((rule.level for rule in rb.severity.rules if evaluate(rule.when, context)), rb.severity.default)
    assert graded == level


def test_level_2_slower_but_vehicle_admin_unaffected():
    answers = assess(impact="slower", main_business_affected=False, interruption_hours=0, expected_recovery_hours=3, feature="none")
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert record.severity == "2"
    assert "未影响车管" in record.severity_reason
    assert "notify-leadership" in path(record) and "written-report" in path(record)


def test_level_3_general_fault_reported_by_the_department_and_logged():
    answers = {**assess(impact="none", interruption_hours=0, expected_recovery_hours=0.5, feature="none"),
               "department-reports": {"reporter": "刘主任", "reported_to": "蒋大队长", "reported_at": "2024-05-01T09:00:00+08:00",
                                      "content": "打印服务器隐患"},
               "maintenance-log": {"log_entry": "更换打印服务器风扇"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert record.severity == "3"
    steps = path(record)
    assert "department-reports" in steps and "maintenance-log" in steps
    assert "notify-leadership" not in steps and "written-report" not in steps
    assert "business-plan-decision" in skipped(record)
    assert record.steps["department-reports"]["reported_to"] == "蒋大队长"
    assert record.steps["maintenance-log"]["log_entry"] == "更换打印服务器风扇"


def test_level_3_that_dragged_on_gets_a_written_report():
    answers = {**assess(impact="none", interruption_hours=0, expected_recovery_hours=0.5, feature="none"),
               "record-handling": {"person_in_charge": "杨工", "checks": "c", "judgement": "j", "steps_and_staff": "s",
                                   "prolonged": True}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.severity == "3"
    assert "written-report" in path(record) and "maintenance-log" not in path(record)


def test_users_reject_the_fix():
    answers = {**assess(), "user-confirmation": {"decision": "reject", "comment": "车管系统仍然很慢"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "rejected"
    assert [e.step for e in record.entries("approval.rejected")] == ["user-confirmation"]
    assert record.steps["fix-not-accepted"]["status"] == "done"
    assert "车管系统仍然很慢" in record.steps["fix-not-accepted"]["text"]
    assert "written-report" not in path(record)


def test_business_contingency_plan_not_started_and_the_run_goes_on():
    answers = {**assess(), "business-plan-decision": {"decision": "reject", "comment": "技术处置即可"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert "approval.rejected" in record.kinds()
    assert record.steps["plan-not-started"]["status"] == "done"
    assert "written-report" in path(record)


def test_no_decision_from_the_leading_group_expires_and_handling_continues():
    answers = {**assess(), "business-plan-decision": "expire"}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert [e.step for e in record.entries("step.expired")] == ["business-plan-decision"]
    assert record.steps["no-plan-decision"]["status"] == "done"
    assert "external-support" in path(record)


def test_the_one_hour_limit_on_the_leading_groups_decision_is_marked_as_a_site_setting():
    """Defect: the 1-hour expiry was invented and unmarked."""
    from flows.catalog import RUNBOOKS
    from runbooks.checklist import checklist

    rb = RUNBOOKS[RB]
    step = rb.step("business-plan-decision")
    assert step.note and "站点设定" in step.note.zh and "Site setting" in step.note.en
    zh = checklist(rb, "zh")
    decision = zh[zh.index("`[approval: business-plan-decision]`"):]
    assert decision.index("⚠ 超出原文：站点设定") < decision.index("1 小时 后过期")
    assert "⚠ beyond the source: Site setting" in checklist(rb, "en")
