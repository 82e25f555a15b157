"""Drills of social-assistance-emergency (plan 8): apply -> verify -> notice -> township approves and pays -> apply again."""

from tests.drill import drill, path, skipped

RB = "social-assistance-emergency"
APPLICATION = {"household_size": 4, "accident_date": "2025-02-27T22:00:00+08:00", "hardship": "house burnt down", "amount_requested": 5000}


def test_application_approved_and_paid_then_filed():
    answers = {"receive-application": APPLICATION,
               "pay-relief": {"amount_paid": 5000, "paid_at": "2025-03-02T10:00:00+08:00", "fund": "city-disaster-fund"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    order = ["receive-application", "household-check", "verification", "public-notice", "submit-to-township",
             "township-approval", "pay-relief", "still-in-hardship", "further-relief", "file-with-city"]
    assert [s for s in ran if s in order] == order
    assert "objection-review" in skipped(record)
    assert "apply-again" not in ran
    assert "5000" in record.steps["submit-to-township"]["text"]
    assert "city-disaster-fund" in record.steps["file-with-city"]["text"]
    assert record.steps["township-approval"]["answered_by"] == "mo-township-civil"
    assert record.outcome == "resolved"


def test_village_verification_rejected_ends_the_application():
    answers = {"household-check": {"facts_confirmed": False, "loss_estimate": 0},
               "verification": {"decision": "reject", "comment": "no fire at that address"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert "approval.rejected" in record.kinds()
    assert "tell-family-not-verified" in ran
    assert "public-notice" not in ran and "pay-relief" not in ran
    assert record.outcome == "rejected"


def test_objection_upheld_stops_before_the_township():
    answers = {"public-notice": {"posted_at": "2025-03-01T09:00:00+08:00", "objection": "raised", "objection_details": "family owns two flats"},
               "objection-review": {"decision": "reject"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert "objection-review" in ran and "tell-family-objection" in ran
    assert "submit-to-township" not in ran
    assert record.outcome == "rejected"


def test_objection_found_unfounded_goes_on():
    answers = {"public-notice": {"posted_at": "2025-03-01T09:00:00+08:00", "objection": "raised", "objection_details": "rumour"},
               "objection-review": {"decision": "approve"}}
    state, record = drill(RB, answers, auto=True)
    assert "pay-relief" in path(record)
    assert record.outcome == "resolved"


def test_township_refuses():
    state, record = drill(RB, {"township-approval": {"decision": "reject", "comment": "income above the line"}}, auto=True)
    ran = path(record)
    assert "tell-family-refused" in ran and "pay-relief" not in ran
    assert [e.step for e in record.entries("approval.rejected")] == ["township-approval"]
    assert record.outcome == "rejected"


def test_serious_hardship_applies_again_to_charity():
    answers = {"still-in-hardship": {"serious": True},
               "apply-again": {"to": "charity", "amount_requested": 8000},
               "further-approval": {"decision": "approve", "answered_by": "lin-charity"},
               "pay-further-relief": {"amount_paid": 8000, "answered_by": "lin-charity"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert ran.index("pay-relief") < ran.index("apply-again") < ran.index("further-approval") < ran.index("pay-further-relief")
    assert record.steps["further-approval"]["answered_by"] == "lin-charity"
    assert "8000" in record.steps["file-with-city"]["text"]
    assert record.outcome == "resolved"


def test_further_relief_refused_keeps_the_first_relief():
    answers = {"still-in-hardship": {"serious": True}, "apply-again": {"to": "county", "amount_requested": 8000},
               "further-approval": {"decision": "reject"}}
    state, record = drill(RB, answers, auto=True)
    ran = path(record)
    assert "tell-family-no-further" in ran
    assert "pay-further-relief" in skipped(record)
    assert "file-with-city" in ran
    assert record.outcome == "resolved"
