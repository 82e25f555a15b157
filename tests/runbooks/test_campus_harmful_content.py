"""Drills of campus-harmful-content (plan 7)."""

from __future__ import annotations

from tests.drill import drill, path, skipped

RB = "campus-harmful-content"


def test_crime_content_is_contained_and_reported_to_public_security():
    answers = {"triage": {"event": "harmful-content", "content_class": "crime-organising", "channel": "video", "description": "论坛帖子"},
               "collect-evidence": {"source": "bbs.example/123", "evidence_kept": True},
               "report-crime": {"reported_to": "县公安局网安大队", "reported_at": "2024-05-01T10:00:00+08:00"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    steps = path(record)
    order = ["contact-leaders", "collect-evidence", "delete-and-filter", "block-propagation", "patrol-spread", "video-review",
             "student-dynamics", "report-crime", "report-up"]
    assert [s for s in steps if s in order] == order
    assert record.steps["block-propagation"]["result"]["args"]["source"] == "bbs.example/123"
    assert record.steps["report-crime"]["reported_to"] == "县公安局网安大队"


def test_content_harmful_to_minors_is_not_a_police_matter():
    answers = {"triage": {"event": "harmful-content", "content_class": "harmful-to-minors", "channel": "website", "description": "x"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert "report-crime" in skipped(record) and "video-review" in skipped(record)


def test_outside_attack_filtered_on_the_router_police_rejected():
    answers = {"triage": {"event": "attack", "content_class": "not-applicable", "description": "扫描"},
               "assess-attack": {"origin": "outside", "devices": "d", "scope": "s", "worst_case": "w"},
               "trace-source-ip": {"source_ip": "203.0.113.5", "attack_class": "scan"},
               "report-to-police": {"decision": "reject"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    assert record.steps["filter-source-ip"]["result"]["endpoint"] == "router.block-address"
    assert record.steps["filter-source-ip"]["result"]["args"]["address"] == "203.0.113.5"
    assert "approval.rejected" in record.kinds() and "police-report" in skipped(record)


def test_inside_attack_and_major_event():
    answers = {"triage": {"event": "attack", "content_class": "not-applicable", "description": "内网攻击"},
               "assess-attack": {"origin": "inside", "devices": "d", "scope": "s", "worst_case": "w", "cut_servers": True}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    steps = path(record)
    assert [s for s in steps if s in ("emergency-cut", "locate-source", "disconnect-computer", "analyse-computer",
                                      "restart-network-devices", "check-communication", "restore-campus-uplink")] == [
        "emergency-cut", "locate-source", "disconnect-computer", "analyse-computer", "restart-network-devices",
        "check-communication", "restore-campus-uplink"]

    answers = {"triage": {"event": "major-event", "content_class": "not-applicable", "description": "艺术节直播"},
               "event-watch": {"problems": True, "details": "上行拥塞"}}
    state, record = drill(RB, answers=answers, time_scale=3600, auto=True)
    assert record.outcome == "resolved", state.message
    steps = path(record)
    assert steps.index("assess-event-needs") < steps.index("report-beforehand") < steps.index("prepare-network")
    assert "report-event-problem" in steps and "上行拥塞" in record.steps["report-event-problem"]["text"]
