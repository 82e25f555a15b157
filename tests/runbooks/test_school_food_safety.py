"""Drills of school-food-safety (plan 10): the report chain, the 1-hour initial report, the 5-working-day summary."""

from datetime import datetime, timedelta, timezone

from tests.drill import drill, path

RB = "school-food-safety"
# 1 h of plan time = 60 s here: the chain of scripted steps finishes well inside it.
ON_TIME = 60.0

INITIAL = {
    "occurred_at": "2025-05-20T12:10:00+08:00", "place": "第一食堂 canteen 1", "harm": "no deaths, 3 in hospital",
    "affected_count": 37, "main_symptoms": "vomiting, diarrhoea", "contact": "杜主任 0731-0000000",
    "cause_first_judgement": "cold noodles at lunch", "measures_taken": "meals stopped, samples sealed",
    "control_status": "no new cases since 14:00", "brief_course": "first cases 12:40 in class 3", "estimated_direct_loss": 12000,
}
SUMMARY = {
    "course": "lunch 12:10, cases from 12:40", "cause_analysis": "staphylococcus in cold noodles", "expert_conclusion": "CDC: food poisoning",
    "handling_opinion": "canteen contractor replaced", "prevention_advice": "no cold dishes in summer", "accountability": "canteen manager dismissed",
}


def kinds_for(record, deadline_id):
    return [e.kind for e in record.journal if e.step == deadline_id and e.kind.startswith("deadline.")]


def test_report_chain_in_order_and_deadlines_met():
    answers = {"staff-report": {"found_at": "2025-05-20T12:45:00+08:00", "place": "canteen 1", "sick_count": 12, "symptoms": "vomiting"},
               "initial-report": INITIAL, "summary-report": SUMMARY}
    state, record = drill(RB, answers, auto=True, time_scale=ON_TIME)
    ran = path(record)
    chain = ["staff-report", "head-report", "bureau-activates", "initial-report", "approve-initial-report", "submit-initial-report",
             "stage-report", "submit-stage-report", "incident-closed", "summary-report", "approve-summary-report", "submit-summary-report",
             "accountability", "hq-summary"]
    assert [s for s in ran if s in chain] == chain
    assert ran.index("on-site-rescue") < ran.index("bureau-activates")          # first aid on the spot, beside the report up
    assert record.outcome == "resolved"
    assert kinds_for(record, "initial-report-1h") == ["deadline.met"]
    assert kinds_for(record, "summary-report-5-working-days") == ["deadline.met"]
    assert "initial-report-overdue" not in record.steps
    # the initial report carries everything the source lists
    assert set(INITIAL) <= set(record.steps["initial-report"])
    sent = record.steps["submit-initial-report"]["text"]
    for value in ("canteen 1", "37", "vomiting, diarrhoea", "0731-0000000", "cold noodles", "samples sealed", "no new cases", "class 3", "12000"):
        assert value in sent
    assert "12" in record.steps["head-report"]["text"]                           # staff's count reaches the township, health, bureau
    assert set(SUMMARY) <= set(record.steps["summary-report"])
    assert "canteen manager dismissed" in record.steps["submit-summary-report"]["text"]
    assert record.steps["approve-initial-report"]["answered_by"] == "wei-bureau-director"  # the bureau head approves


def test_initial_report_late_when_the_hour_has_passed():
    occurred = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    state, record = drill(RB, {"initial-report": INITIAL}, params={"occurred_at": occurred}, auto=True, time_scale=ON_TIME)
    kinds = kinds_for(record, "initial-report-1h")
    assert kinds == ["deadline.missed", "deadline.met-late"]
    assert record.steps["initial-report-overdue"]["status"] == "done"             # on_miss paged the bureau head and the city
    assert "1小时" in record.steps["initial-report-overdue"]["text"]
    missed_at = next(i for i, e in enumerate(record.journal) if e.kind == "deadline.missed")
    submitted_at = next(i for i, e in enumerate(record.journal) if e.kind == "step.started" and e.step == "submit-initial-report")
    assert missed_at < submitted_at
    assert record.outcome == "resolved"                                          # late, but the incident is still handled


def test_bureau_head_sends_the_initial_report_back():
    answers = {"initial-report": INITIAL,
               "approve-initial-report": {"decision": "reject", "comment": "add the hospital names"},
               "revise-initial-report": {"corrections": "patients at City People's Hospital"}}
    state, record = drill(RB, answers, auto=True, time_scale=ON_TIME)
    ran = path(record)
    assert "approval.rejected" in record.kinds()
    assert ran.index("revise-initial-report") < ran.index("submit-initial-report")
    assert "City People's Hospital" in record.steps["submit-initial-report"]["text"]
    assert record.outcome == "resolved"


def test_summary_report_never_written_leaves_the_deadline_open():
    state, record = drill(RB, {"summary-report": "expire"}, auto=True, time_scale=ON_TIME)
    assert record.outcome == "expired"
    assert "step.expired" in record.kinds()
    assert "submit-summary-report" not in path(record)
    assert kinds_for(record, "summary-report-5-working-days") == ["deadline.unmet"]



def test_reports_are_drafted_from_what_was_recorded_and_routed_to_the_approver():
    """The plan's reports are documents: drafted from the answers, published on the run, sent to whoever approves them."""
    answers = {"initial-report": INITIAL, "summary-report": SUMMARY}
    state, record = drill(RB, answers, auto=True, time_scale=ON_TIME)
    initial = record.steps["draft-initial-report"]["document"]
    for value in ("canteen 1", "37", "vomiting, diarrhoea", "cold noodles", "12000", "事故原因初步判断", "First judgement of the cause"):
        assert value in initial, value
    assert "canteen manager dismissed" in record.steps["draft-summary-report"]["document"]
    assert "draft-stage-report" in record.steps
    drafted = [e.step for e in record.entries("report.drafted")]
    assert drafted == ["draft-initial-report", "draft-stage-report", "draft-summary-report"]
    routed = {e.step: e.data["people"] for e in record.entries("report.sent")}
    assert routed["draft-initial-report"] == ["drill-desk"]  # a drill routes to the drill desk instead of the bureau head
    ran = path(record)
    assert ran.index("draft-initial-report") < ran.index("approve-initial-report") < ran.index("submit-initial-report")
