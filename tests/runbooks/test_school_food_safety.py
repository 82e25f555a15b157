"""Drills of school-food-safety (plan 10): the report chain, the 1-hour initial report, the 5-working-day summary."""

import time
from datetime import datetime, timedelta, timezone

from flows.answers import answer_step
from flows.catalog import FLOWS
from flows.record.archive import find_record
from tasks.incident import Incident
from tests.drill import Background, drill, path, wait_for_step, waiting

RB = "school-food-safety"
# 1 h of plan time = 60 s here: the chain of scripted steps finishes well inside it.
ON_TIME = 60.0

INITIAL = {
    "occurred_at": "2025-05-20T12:10:00+08:00", "place": "第一食堂 canteen 1", "harm": "no deaths, 3 in hospital",
    "affected_count": 37, "main_symptoms": "vomiting, diarrhoea", "contact": "杜主任 0731-0000000",
    "cause_first_judgement": "cold noodles at lunch", "measures_taken": "meals stopped, samples sealed",
    "control_status": "no new cases since 14:00", "brief_course": "first cases 12:40 in class 3", "estimated_direct_loss": 12000,
}
STAFF = {"found_at": "2025-05-20T12:45:00+08:00", "place": "canteen 1", "sick_count": 12, "symptoms": "vomiting"}
CLOSED = {"closed_at": "2025-05-21T18:00:00+08:00", "patients_discharged": True, "teaching_restored": True, "aftercare": "visits"}
SUMMARY = {
    "course": "lunch 12:10, cases from 12:40", "cause_analysis": "staphylococcus in cold noodles", "expert_conclusion": "CDC: food poisoning",
    "handling_opinion": "canteen contractor replaced", "prevention_advice": "no cold dishes in summer", "accountability": "canteen manager dismissed",
}


def kinds_for(record, deadline_id):
    return [e.kind for e in record.journal if e.step == deadline_id and e.kind.startswith("deadline.")]


def test_report_chain_in_order_and_deadlines_met():
    answers = {"staff-report": STAFF, "initial-report": INITIAL, "summary-report": SUMMARY}
    state, record = drill(RB, answers, auto=True, time_scale=ON_TIME)
    ran = path(record)
    chain = ["staff-report", "initial-report", "draft-initial-report", "submit-initial-report", "stage-report--1",
             "submit-stage-report--1", "incident-closed", "summary-report", "approve-summary-report", "submit-summary-report",
             "accountability", "hq-summary"]
    assert [s for s in ran if s in chain] == chain
    assert ran.index("on-site-rescue") < ran.index("report-rescue-to-city")     # first aid on the spot, beside the reports
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


def test_initial_report_goes_out_within_the_hour_while_the_rescue_form_is_unanswered():
    """Defect: the report waited behind the rescue team's form, the bureau at the scene and an approval with no expiry."""
    answers = {"staff-report": STAFF, "school-group-activated": {"reported_at": "2025-05-20T12:50:00+08:00", "control_measures": "meals stopped"},
               "bureau-activates": {"hq_members": "director", "at_scene": False}, "initial-report": INITIAL,
               "incident-closed": CLOSED, "summary-report": SUMMARY, "approve-summary-report": {"decision": "approve"},
               "accountability": {"decisions": "none"}, "hq-summary": {"lessons": "-", "improvements": "-", "drills_planned": True}}
    run = Background(FLOWS[RB], answers=answers, drill=True, time_scale=ON_TIME)
    wait_for_step("on-site-rescue", seconds=60)
    stage = wait_for_step("stage-report--1", seconds=50)                         # the initial report is out: stage reports begin
    assert waiting("on-site-rescue") is not None, "the rescue form is still unanswered"
    assert answer_step(stage.flow_run_id, by="du-bureau-logistics", step="stage-report--1",
                       values={"developments": "2 more ill", "progress": "all treated", "cause": "cold noodles", "concluded": True}).ok
    rescue = waiting("on-site-rescue")
    assert answer_step(rescue.flow_run_id, by="xie-school-doctor", step="on-site-rescue",
                       values={"treated_on_site": 30, "sent_to_hospital": 7, "situation_stable": True}).ok
    state = run.join(120)
    record = find_record(str(state.state_details.flow_run_id))
    submitted = next(e.at for e in record.journal if e.kind == "step.done" and e.step == "submit-initial-report")
    rescued = next(e.at for e in record.journal if e.kind == "step.answered" and e.step == "on-site-rescue")
    assert submitted < rescued
    assert kinds_for(record, "initial-report-1h") == ["deadline.met"]
    assert not [s for s in path(record) if s.startswith("approve-initial")]     # nothing holds the initial report for approval


def test_unfilled_initial_report_form_still_reports_what_is_known():
    state, record = drill(RB, {"staff-report": STAFF, "initial-report": "expire"}, auto=True, time_scale=ON_TIME)
    assert record.steps["initial-report"]["status"] == "expired"
    sent = record.steps["submit-initial-report"]["text"]
    for value in ("canteen 1", "12", "vomiting", "待补充"):
        assert value in sent, value
    assert kinds_for(record, "initial-report-1h") == ["deadline.met"]
    assert record.outcome == "resolved"


def test_stage_reports_repeat_until_handling_has_ended():
    """Defect: only one stage report was possible. Each is its own form, draft and page."""
    answers = {"initial-report": INITIAL,
               "stage-report--1": {"developments": "5 more ill", "progress": "hospital", "cause": "unknown", "concluded": False},
               "stage-report--2": {"developments": "no new cases", "progress": "discharging", "cause": "noodles", "concluded": False},
               "stage-report--3": {"developments": "all discharged", "progress": "closed", "cause": "staphylococcus", "concluded": True}}
    state, record = drill(RB, answers, auto=True, time_scale=ON_TIME)
    texts = [record.steps[f"submit-stage-report--{n}"]["text"] for n in (1, 2, 3)]
    assert "5 more ill" in texts[0] and "no new cases" in texts[1] and "staphylococcus" in texts[2]
    assert "stage-report--4" not in record.steps
    assert [e.data["iteration"] for e in record.entries("repeat.iteration")] == [1, 2, 3]
    assert record.steps["stage-reports"]["iterations"] == 3


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


def test_a_passed_hour_is_on_the_journal_before_the_report_starts_however_slow_the_server(monkeypatch):
    """Defect (CI, served): the watcher's claim on a loaded server took longer than the main line took to reach
    the report, so the journal had the initial report begin before the hour was missed."""
    claim = Incident.claim

    def slow_claim(self, name, unsure=True):
        if name.startswith("deadline-missed-"):  # answered only once the report is drafted, and slowly
            until = time.monotonic() + 30
            while "draft-initial-report" not in self.finished_at and time.monotonic() < until:
                time.sleep(0.05)
            time.sleep(0.5)
        return claim(self, name, unsure)

    monkeypatch.setattr(Incident, "claim", slow_claim)
    occurred = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    state, record = drill(RB, {"initial-report": INITIAL}, params={"occurred_at": occurred}, auto=True, time_scale=ON_TIME)
    entries = [e for e in record.journal if e.step in ("initial-report-1h", "submit-initial-report")]
    assert [e.kind for e in entries[:2]] == ["deadline.missed", "step.started"], [e.kind for e in entries]
    assert (entries[1].at - entries[0].at).total_seconds() < 3, "the report waited for the record, not for a timeout"
    assert kinds_for(record, "initial-report-1h") == ["deadline.missed", "deadline.met-late"]
    assert record.steps["initial-report-overdue"]["status"] == "done"


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
    assert "draft-stage-report" in record.steps                                  # the latest stage report under its plain id
    drafted = [e.step for e in record.entries("report.drafted")]
    assert drafted == ["draft-initial-report", "draft-stage-report--1", "draft-summary-report"]
    routed = {e.step: e.data["people"] for e in record.entries("report.sent")}
    assert routed["draft-summary-report"] == ["drill-desk"]  # a drill routes to the drill desk instead of the bureau head
    ran = path(record)
    assert ran.index("draft-initial-report") < ran.index("submit-initial-report")
