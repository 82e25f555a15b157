"""Drills of grid-earthquake (plan 3): the grade from the source's numbers decides which HQ activates."""

import pytest

from tests.drill import drill, path, skipped

RB = "grid-earthquake"
FAST = 3600.0


@pytest.mark.parametrize("params, level", [
    ({"deaths": 10, "magnitude": 5.5, "city_population": 300000}, "general"),
    ({"deaths": 199}, "general"),
    ({"deaths": 200}, "serious"),
    ({"deaths": 1000}, "serious"),
    ({"deaths": 1001}, "catastrophic"),
    ({"loss_gdp_pct": 0.99}, "general"),
    ({"loss_gdp_pct": 1}, "serious"),
    ({"loss_gdp_pct": 5}, "serious"),
    ({"loss_gdp_pct": 5.01}, "catastrophic"),
    ({"magnitude": 6.5, "city_population": 2000000}, "general"),        # 大于6.5级: 6.5 itself is not serious
    ({"magnitude": 6.8, "city_population": 2000000}, "serious"),
    ({"magnitude": 6.8, "city_population": 1000000}, "general"),        # not over 1 million
    ({"magnitude": 7.0, "city_population": 499999}, "general"),
    ({"magnitude": 7.0, "city_population": 500000}, "serious"),
    ({"magnitude": 7.0, "city_population": 1000000}, "serious"),
    ({"magnitude": 7.0, "city_population": 1000001}, "catastrophic"),
])
def test_grade_from_source_numbers(params, level):
    # severity only: nobody answers the damage survey, so the run ends (expired) right after grading
    state, record = drill(RB, {"survey-damage": "expire"}, params=params, auto=True, time_scale=FAST)
    assert record.outcome == "expired", record.message
    assert record.severity == level, record.severity_reason
    assert "step.expired" in record.kinds()


def test_general_quake_local_company_responds():
    state, record = drill(RB, params={"deaths": 20, "loss_gdp_pct": 0.3, "magnitude": 6.0, "city_population": 800000},
                          auto=True, time_scale=FAST)
    ran = path(record)
    assert record.severity == "general"
    assert "local-power-security" in ran
    assert not {"activate-provincial-hq", "activate-national-hq", "send-liaison"} & set(ran)
    assert "forecast-or-quake" in ran and "pre-quake-preparation" not in ran
    assert "report-to-seismology" in ran and "report-to-state-council" in skipped(record)
    assert record.outcome == "resolved"


def test_serious_quake_activates_provincial_hq():
    state, record = drill(RB, {"provincial-emergency-support": {"government_hq_contacted": True, "support_sent": "3 repair teams"}},
                          params={"deaths": 450}, auto=True, time_scale=FAST)
    ran = path(record)
    assert record.severity == "serious"
    assert "activate-provincial-hq" in ran and "provincial-emergency-support" in ran
    assert "activate-national-hq" not in ran and "local-power-security" not in ran
    assert record.steps["provincial-emergency-support"]["support_sent"] == "3 repair teams"
    assert "200" in (record.severity_reason or "")


def test_catastrophic_quake_national_hq_and_liaison_and_state_council_report():
    answers = {
        "send-liaison": {"liaison": "联络员 张三 138-0000-0000", "arrived": True},
        "survey-damage": {"staff_casualties": "3 dead", "generation_damage": "unit 2 tripped", "grid_damage": "220 kV substation X",
                          "telecom_damage": "microwave link down", "supply_lost": "40% of the city"},
        "loss-statistics": {"staff_dead": 3, "staff_injured": 12, "facilities_damaged": "substation X", "direct_loss_yuan": 5200,
                            "assessment": "major"},
    }
    state, record = drill(RB, answers, params={"magnitude": 7.2, "city_population": 3000000, "region": "X市"},
                          auto=True, time_scale=FAST)
    ran = path(record)
    assert record.severity == "catastrophic"
    assert ["activate-national-hq", "send-liaison", "national-mobilisation"] == [s for s in ran if s in
            ("activate-national-hq", "send-liaison", "national-mobilisation")]
    assert "report-to-state-council" in ran and "report-to-seismology" in skipped(record)
    assert record.steps["send-liaison"]["arrived"] is True
    assert record.steps["loss-statistics"]["staff_dead"] == 3
    assert "substation X" in record.steps["report-losses-up"]["text"]
    # survey before restoration, restoration before loss statistics
    assert ran.index("survey-damage") < ran.index("post-quake-response") < ran.index("loss-statistics")
    assert {"restore-facilities", "supply-key-users", "security-measures", "medical-on-call"} <= set(ran)


def test_forecast_prepares_then_stands_down_when_lifted():
    state, record = drill(RB, {"quake-struck": {"struck": False},
                               "adjust-operating-modes": {"plants_adjusted": "hydro plant A", "nuclear_hydro_plan": True},
                               "approve-mode-change": {"decision": "reject", "comment": "lower the reservoir first"},
                               "key-users-backup": {"users_checked": 4, "mobile_generators": 2}},
                          params={"forecast_received": True}, auto=True, time_scale=FAST)
    ran = path(record)
    assert ["enter-imminent-period", "report-forecast", "pre-quake-preparation"] == ran[1:4]
    assert {"materials-ready", "dispatch-combat-state", "urge-key-users", "geohazard-measures", "help-evacuation"} <= set(ran)
    assert "revise-mode-change" in ran and "approval.rejected" in record.kinds()
    assert record.steps["key-users-backup"]["mobile_generators"] == 2
    assert "stand-down" in ran and "grade-quake" not in ran and "survey-damage" not in ran
    assert record.outcome == "resolved"


def test_forecast_then_quake_goes_on_to_post_quake_response():
    state, record = drill(RB, {"quake-struck": {"struck": True}}, params={"forecast_received": True, "deaths": 250},
                          auto=True, time_scale=FAST)
    ran = path(record)
    assert ran.index("pre-quake-preparation") < ran.index("grade-quake") < ran.index("survey-damage")
    assert "stand-down" not in ran
    assert record.severity == "serious" and record.outcome == "resolved"


def test_forecast_then_a_big_quake_in_a_big_city_is_catastrophic_and_reaches_the_national_hq():
    """Defect: after a forecast the grade came from the launch figures (0 dead, M5.0): always general, false report."""
    answers = {"quake-struck": {"struck": True, "magnitude": 7.2, "city_population": 1500000, "deaths": 35}}
    state, record = drill(RB, answers, params={"forecast_received": True}, auto=True, time_scale=FAST)
    assert record.outcome == "resolved", record.message
    assert record.severity == "catastrophic", record.severity_reason
    ran = path(record)
    assert ran.index("quake-struck") < ran.index("grade-quake") < ran.index("activate-national-hq") < ran.index("send-liaison")
    report = record.steps["report-quake"]["text"]
    assert "7.2" in report and "35" in report and "5.0" not in report                 # the figures the grade used, not the launch ones
    started = next(e for e in record.journal if e.kind == "incident.started")
    assert started.data["severity"] is None                                           # no grade before the quake
    first_grade = next(i for i, e in enumerate(record.journal) if e.kind == "severity.graded")
    forecast_pages = [i for i, e in enumerate(record.journal) if e.kind == "step.done" and e.step in ("enter-imminent-period", "report-forecast")]
    assert forecast_pages and max(forecast_pages) < first_grade


def test_surveyed_damage_regrades_and_activates_the_higher_hq():
    answers = {"survey-damage": {"staff_casualties": "3", "generation_damage": "-", "grid_damage": "-", "telecom_damage": "-",
                                 "supply_lost": "city", "deaths_now": 250}}
    state, record = drill(RB, answers, params={"deaths": 20, "magnitude": 6.0, "city_population": 800000}, auto=True, time_scale=FAST)
    assert record.severity == "serious"
    changed = record.entries("severity.changed")
    assert [(e.data["previous"], e.data["severity"]) for e in changed] == [("general", "serious")]
    assert "activate-provincial-hq-on-regrade" in path(record)
    assert "严重破坏性地震" in record.steps["report-survey"]["text"]                # later pages carry the new grade
