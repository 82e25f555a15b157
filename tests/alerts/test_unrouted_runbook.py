"""The default route's runbook (runbooks/unrouted-alert.yaml) runs: the duty officer is paged, picks the plan, done."""

import pytest

from tests.drill import drill, path

pytestmark = pytest.mark.server


def test_the_duty_officer_is_paged_and_records_the_plan():
    answers = {"pick-plan": {"decision": "plan-started", "runbook": "hospital-his-outage", "notes": "route HISProbe* too"}}
    state, record = drill("unrouted-alert", answers, auto=True)
    assert path(record) == ["page-duty-officer", "pick-plan", "done"]
    assert record.steps["pick-plan"]["runbook"] == "hospital-his-outage"
    assert record.outcome == "resolved"
