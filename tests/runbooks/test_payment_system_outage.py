"""Drills of payment-system-outage (plan 6): the 4-hour line, the data-loss case, HVPS first."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.drill import drill, path, skipped

RB = "payment-system-outage"
SLOW = 60.0   # 4 h of plan time = 240 s: the 4-hour threshold cannot fire by accident


@pytest.mark.parametrize("params, level", [
    ({"expected_recovery_hours": 1}, "routine"),
    ({"expected_recovery_hours": 4}, "routine"),              # "超过4小时" means more than 4
    ({"expected_recovery_hours": 4.1}, "over-4h"),
    ({"expected_recovery_hours": 3.9, "data_lost": True}, "data-loss"),
    ({"expected_recovery_hours": 6, "data_lost": True}, "over-4h"),
    ({"cause": "paralysis", "expected_recovery_hours": 1}, "paralysis"),
    ({"cause": "staff-limited"}, "staff-limited"),
])
def test_grade(params, level):
    state, record = drill(RB, {"affected-systems": "expire"}, params=params, auto=True, time_scale=SLOW)
    assert record.severity == level, record.severity_reason
    assert record.outcome == "expired"


def test_hvps_first_then_the_other_systems():
    answers = {"affected-systems": {"hvps": True, "beps": True, "cheque_image": False, "ibps": True, "core_banking": True},
               "hvps-switch": {"method": "pboc-proxy", "hvps_running": True}}
    state, record = drill(RB, answers, params={"expected_recovery_hours": 6}, auto=True, time_scale=SLOW)
    ran = path(record)
    assert record.severity == "over-4h"
    for other in ("beps-switch", "ibps-switch", "core-banking-switch", "tell-branches"):
        assert ran.index("hvps-switch") < ran.index(other)
    assert "cheque-image-switch" in skipped(record) and "hvps-ok" in skipped(record)
    assert record.steps["hvps-switch"]["method"] == "pboc-proxy"
    assert "report-pboc-initial" in ran and "data-recovery" in ran and "recover-lost-data" not in ran
    assert ran.index("service-restored") < ran.index("reconcile") < ran.index("report-pboc")
    assert "threshold.cancelled" in record.kinds() and "threshold.fired" not in record.kinds()
    assert record.outcome == "resolved"


def test_data_loss_recovered_and_reported():
    answers = {"recover-lost-data": {"records_lost": 120, "records_recovered": 100, "reentered": 15, "complete": False},
               "reconcile": {"balanced": True}}
    state, record = drill(RB, answers, params={"expected_recovery_hours": 2, "data_lost": True}, auto=True, time_scale=SLOW)
    ran = path(record)
    assert record.severity == "data-loss"
    assert ["recover-lost-data", "data-incomplete"] == [s for s in ran if s in ("recover-lost-data", "data-incomplete")]
    assert "120" in record.steps["data-incomplete"]["text"]
    assert ran.index("recover-lost-data") < ran.index("reconcile")
    assert record.outcome == "resolved"


def test_routine_fault_is_not_reported_to_pboc_as_an_emergency():
    state, record = drill(RB, params={"expected_recovery_hours": 0.5}, auto=True, time_scale=SLOW)
    assert record.severity == "routine"
    assert "report-pboc-initial" in skipped(record)


def test_four_hour_line_fires_when_the_outage_has_run_that_long():
    started = (datetime.now(timezone.utc) - timedelta(hours=5)).isoformat()
    state, record = drill(RB, params={"fault_started": started, "expected_recovery_hours": 2}, auto=True, time_scale=SLOW)
    fired = [e for e in record.journal if e.kind == "threshold.fired"]
    assert [e.step for e in fired] == ["four-hour-line"]
    assert record.steps["four-hours-passed"]["status"] == "done"
    assert "4" in record.steps["four-hours-passed"]["text"]


def test_rejected_report_is_revised_before_it_goes_to_pboc():
    answers = {"approve-report": {"decision": "reject", "comment": "add amounts"}, "revise-report": {"corrections": "amount 3.2m yuan"}}
    state, record = drill(RB, answers, auto=True, time_scale=SLOW)
    ran = path(record)
    assert "approval.rejected" in record.kinds()
    assert ran.index("revise-report") < ran.index("report-pboc")
    assert record.outcome == "resolved"
