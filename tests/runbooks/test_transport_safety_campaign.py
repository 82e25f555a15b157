"""Drills of transport-safety-campaign (plan 1): four inspection lines, enforcement, hazard handling, holiday duty."""

from datetime import datetime, timedelta, timezone

from tests.drill import drill, path, skipped

RB = "transport-safety-campaign"
SLOW = 60.0   # 3 days of plan time = 72 min: the window cannot pass by accident


def test_four_lines_side_by_side_and_the_ferry_counts():
    answers = {"inspect-water-transport": {"tourist_boats_suspended": 1, "sand_boats_suspended": 2, "ferry_notices": 1,
                                           "iron_ferry_life_jackets_missing": 14, "iron_ferry_life_rings_missing": 2,
                                           "wooden_ferry_life_rings_missing": 6, "ledger_done": True, "hazards_found": 3}}
    state, record = drill(RB, answers, auto=True, time_scale=SLOW)
    ran = path(record)
    tracks = [e.step for e in record.journal if e.kind == "track.started"]
    assert sorted(tracks) == ["duty", "key-projects", "road-passenger", "rural-roads", "water-transport", "work"]
    assert ran.index("set-up-leading-group") < ran.index("enterprise-groups") < ran.index("inspection") < ran.index("market-enforcement")
    assert record.steps["inspect-water-transport"]["iron_ferry_life_jackets_missing"] == 14
    text = record.steps["request-lifesaving-gear"]["text"]
    assert "救生衣14件" in text and "救生圈2只" in text and "救生圈6只" in text
    assert [e.kind for e in record.journal if e.step == "inspection-window"] == ["deadline.met"]
    assert "fine-only-correction" in skipped(record)
    assert {"deadline-rectification", "major-hazards", "order-stop-production", "hazards-closed"} <= set(skipped(record))
    assert record.outcome == "resolved"


def test_hazards_deadline_fixes_major_watch_and_stop_order():
    answers = {"hazard-register": {"total": 9, "fixed_at_once": 5, "deadline_fixes": 3, "major": 1},
               "deadline-rectification": {"responsible": "运管所 / 长运公司", "funds": "20万元", "measures": "replace 3 buses",
                                          "due": "2025-06-30T18:00:00+08:00", "monitored": True},
               "major-hazards": {"listed": "K12 landslide slope", "watchers": "2 people in shifts", "watch_24h": True,
                                 "may_cause_larger_accident": True},
               "order-stop-production": {"enterprise": "XX quarry transport", "order_issued_at": "2025-06-11T17:00:00+08:00"},
               "market-enforcement": {"unlicensed_cases": 2, "passenger_rights_cases": 1, "price_violations": 0, "overloaded_vehicles": 3,
                                      "passengers_offloaded": 25, "fine_only_cases": 1, "staff_on_site": True}}
    state, record = drill(RB, answers, auto=True, time_scale=SLOW)
    ran = path(record)
    order = ["hazard-register", "deadline-rectification", "major-hazards", "order-stop-production", "hazards-closed"]
    assert [s for s in ran if s in order] == order
    assert record.steps["deadline-rectification"]["funds"] == "20万元"
    assert record.steps["major-hazards"]["watch_24h"] is True
    assert "fine-only-correction" in ran



def test_holiday_duty_runs_beside_the_whole_campaign_and_nothing_invented_is_reported():
    """Defects: holiday duty (section 六) was a last step; an invented county report paged only the leading group."""
    state, record = drill(RB, {"hazard-register": {"total": 2, "fixed_at_once": 2, "deadline_fixes": 0, "major": 0}}, auto=True, time_scale=SLOW)
    ran = path(record)
    assert ran.index("holiday-duty") < ran.index("campaign-summary")
    duty_started = next(i for i, e in enumerate(record.journal) if e.kind == "track.started" and e.step == "duty")
    inspection_done = next(i for i, e in enumerate(record.journal) if e.kind == "step.done" and e.step == "inspection")
    assert duty_started < inspection_done                                          # on duty while the inspection runs
    assert "report-to-county" not in record.steps
    assert record.outcome == "resolved"


def test_inspection_window_missed():
    started = (datetime.now(timezone.utc) - timedelta(days=4)).isoformat()
    state, record = drill(RB, params={"campaign_start": started}, auto=True, time_scale=SLOW)
    kinds = [e.kind for e in record.journal if e.step == "inspection-window"]
    assert kinds[0] == "deadline.missed"
    assert record.steps["inspection-overdue"]["status"] == "done"
