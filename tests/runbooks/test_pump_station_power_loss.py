"""Plan 5, the pump station's power-loss checklist, walked as drills against the real Prefect server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.drill import drill, path, skipped

RB = "pump-station-power-loss"
COMMON = {
    "check-header-pressure": {"header_pressure_mpa": 0.42, "normal": True},
    "open-series-valve": {"valve_open": True},
    "confirm-phoned": {"reached": "dispatch, BF water, high-voltage room"},
    "close-butterfly-valves": {"valves_closed": "1#, 2#"},
    "power-restored": {"restored_at": "2026-11-26T10:00:00+08:00"},
    "restart-pumps": {"sequence": "1# 10:05, 2# 10:09", "supply_normal": True},
    "final-record": {"cause": "110 kV line trip"},
}


def test_pump_that_started_by_itself_goes_straight_to_the_header_pressure():
    answers = {**COMMON, "check-diesel-pump": {"auto_started": True, "outlet_pressure_mpa": 0.45},
               "record-diesel-parameters": {"fuel_level_pct": 80, "header_pressures": "BF 0.42, stove 0.40"}}
    state, record = drill(RB, answers, time_scale=60)
    assert record.outcome == "resolved", state.message
    assert "start-diesel-by-hand" in skipped(record) and "refuel--1" in skipped(record)   # each round skips it: fuel is fine
    ran = path(record)
    assert ran.index("first-response") < ran.index("check-diesel-pump") < ran.index("check-header-pressure")
    assert ran.index("power-restored") < ran.index("restart-pumps") < ran.index("notify-restored") < ran.index("final-record")
    assert record.steps["record-diesel-parameters"]["header_pressures"] == "BF 0.42, stove 0.40"
    assert "1# 10:05" in record.steps["notify-restored"]["text"]


def test_pump_that_did_not_start_is_started_by_hand_and_low_fuel_is_refilled():
    answers = {**COMMON, "check-diesel-pump": {"auto_started": False},
               "start-diesel-by-hand": {"running": True, "outlet_pressure_mpa": 0.4},
               "record-diesel-parameters": {"fuel_level_pct": 20, "header_pressures": "BF 0.40"},
               "refuel": {"source": "dispatch"}}
    state, record = drill(RB, answers, time_scale=60)
    assert record.outcome == "resolved", state.message
    ran = path(record)
    assert ran.index("check-diesel-pump") < ran.index("start-diesel-by-hand") < ran.index("check-header-pressure")
    assert "page-dispatch-no-pump" not in ran  # the diesel runs once started by hand
    assert record.steps["refuel"]["source"] == "dispatch"
    # both operators' tracks ran, each as its own child run
    assert {"open-series-valve", "notify-users", "confirm-phoned", "close-butterfly-valves"} <= set(ran)
    assert record.steps["close-butterfly-valves"]["answered_by"] == "wang-chief"


def test_pump_that_will_not_start_even_by_hand_pages_dispatch():
    answers = {**COMMON, "check-diesel-pump": {"auto_started": False}, "start-diesel-by-hand": {"running": False},
               "record-diesel-parameters": {"fuel_level_pct": 90, "header_pressures": "none"}}
    state, record = drill(RB, answers, time_scale=60)
    assert "page-dispatch-no-pump" in path(record)
    assert "无法启动" in record.steps["page-dispatch-no-pump"]["text"]


def test_a_long_outage_triggers_the_fuel_watch_until_power_returns():
    started = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat()  # power lost 3 h ago: past the 2 h fuel watch
    answers = {**COMMON, "check-diesel-pump": {"auto_started": True},
               "record-diesel-parameters": {"fuel_level_pct": 60, "header_pressures": "BF 0.41"}}
    state, record = drill(RB, answers, params={"outage_started": started}, time_scale=1)
    assert [e.step for e in record.entries("threshold.fired")] == ["fuel-watch"]
    assert record.steps["fuel-watch-reminder"]["status"] == "done"


def test_a_restarted_run_keeps_its_clock_and_does_not_fire_a_time_rule_twice():
    """A crashed worker or a suspended wait reruns the flow from the top: the fuel watch must not page again."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from flows.catalog import RUNBOOKS
    from flows.engine import _run_started
    from tasks.incident import Incident
    from integrations.contacts import Directory
    from integrations.site import Site

    started = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat()
    answers = {**COMMON, "check-diesel-pump": {"auto_started": True},
               "record-diesel-parameters": {"fuel_level_pct": 60, "header_pressures": "BF 0.41"}}
    state, record = drill(RB, answers, params={"outage_started": started}, time_scale=1)
    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    start_time = run.start_time
    assert _run_started(run) == start_time
    assert abs((record.started - start_time).total_seconds()) < 0.001, "the incident's clock is the run's own start"
    # What the next attempt of the same run would find:
    again = Incident(RUNBOOKS[RB], params={}, severity=None, drill=True, time_scale=1, auto=False, answers={}, alert=None,
                     flow_run_id=run_id, directory=Directory(), site=Site(), started=_run_started(run))
    assert again.claim("threshold-fuel-watch") is False
    assert again.started == start_time
    assert again.claim("threshold-something-else") is True


def test_the_deputy_opens_the_series_valve_before_the_chief_has_answered_anything_and_the_diesel_is_logged_throughout():
    """Defects: the deputy's immediate actions waited for the chief's two checks; diesel parameters were recorded once."""
    import time

    from flows.answers import answer_step
    from flows.catalog import FLOWS
    from flows.record.archive import find_record
    from tests.drill import Background, wait_for_step, waiting

    answers = {k: v for k, v in COMMON.items() if k not in ("open-series-valve", "power-restored")}
    answers["record-diesel-parameters"] = {"fuel_level_pct": 70, "header_pressures": "BF 0.41"}
    run = Background(FLOWS[RB], answers=answers, drill=True, time_scale=3600)   # a 30-minute round is 0.5 s
    valve = wait_for_step("open-series-valve", seconds=60)
    chief = wait_for_step("check-diesel-pump", seconds=30)
    assert waiting("open-series-valve") and waiting("check-diesel-pump"), "both wait at once: the deputy does not wait for the chief"
    assert answer_step(valve.flow_run_id, by="li-deputy", step="open-series-valve", values={"valve_open": True}).ok
    assert answer_step(chief.flow_run_id, by="wang-chief", step="check-diesel-pump", values={"auto_started": True}).ok
    power = wait_for_step("power-restored", seconds=60)
    time.sleep(6)                                                                 # the diesel runs: several rounds of records
    assert answer_step(power.flow_run_id, by="wang-chief", step="power-restored", values={"restored_at": "2026-11-26T10:00:00+08:00"}).ok
    state = run.join(120)
    record = find_record(str(state.state_details.flow_run_id))
    assert record.outcome == "resolved"
    # each track notices its answer at its own poll, so the journal's order of answers is not the order
    # they were given; what the plan asks is that the deputy was asked before the chief had answered
    asked: dict = {}
    for e in record.journal:
        if e.kind == "step.waiting":
            asked.setdefault(e.step, e.at)
    answered = {e.step: e.at for e in record.journal if e.kind == "step.answered"}
    assert asked["open-series-valve"] < answered["check-diesel-pump"]
    rounds = [s for s in record.steps if s.startswith("record-diesel-parameters--")]
    assert len(rounds) >= 2, rounds
    assert record.steps["record-diesel-parameters"]["header_pressures"] == "BF 0.41"


def test_invented_figures_are_site_settings_marked_as_such():
    from flows.catalog import RUNBOOKS
    from runbooks.checklist import checklist

    rb = RUNBOOKS[RB]
    assert rb.parameters["low_fuel_pct"].note and "偏低" in rb.parameters["low_fuel_pct"].note.zh
    assert "较长" in rb.thresholds[0].note.zh
    zh = checklist(rb, "zh")
    assert zh.count("⚠ 超出原文") >= 3 and "站点设定" in zh
