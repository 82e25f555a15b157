"""Durable time, end to end (issue #11, "what it must show").

1. hospital-his-outage on the served stack at time scale 300: with the class-1 triage answered and the
   recovery unanswered, the 30-minute and 6-hour manual-fallback notices fire in order while the run waits
   suspended (each time the escalation watcher wakes the run for that notice); answering the recovery as
   `runbook answer` does stops the 24-hour one, and the incident completes.
2. A fixture runbook (tests/fixtures/scenarios/restart-drill.yaml) on a Prefect server of its own: while its
   wait is suspended the escalation watcher, the Prefect server and the served runner are restarted in turn,
   each down while a timer comes due; every tier, reminder and threshold due pages exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client

from flows.answers import answer_step
from flows.launch import start_incident
from flows.record.timeline import journal_from_events
from tests.test_durable_time import flow_process, state_of, wait_until

ROOT = Path(__file__).resolve().parent.parent

# Every wait of a class-1, network-wide HIS outage but the recovery, answered by script (the `answers` parameter).
HIS_CLASS_1 = {
    "record-report": {"station": "门诊三楼挂号窗口 outpatient desk 3", "symptom": "no-network"},
    "triage": {"cause": "server-down", "network_wide": True, "quick_fix": False},
    "report-leadership": {"acknowledged": True},
    "leadership-coordinates": {"coordinator": "何院长 He"},
    "set-manual-start": {"manual_start_at": "2026-03-02T09:30:00+08:00"},
    "restore-system": {"restored_by": "吴工 Wu"},
    "record-restore-details": {"details": "restored the main database from last night's backup"},
    "contact-vendors": {"vendors": "HIS vendor hotline"},
    "help-save-data": {"departments_visited": "emergency, pharmacy", "breakpoints_saved": True},
    "cashiers-reconcile": {"patients_reentered": True, "invoice_register_reconciled": True, "network_stable": True},
    "discharge-reconcile": {"delayed_settled": 3},
    "nurse-reentry": {"orders_reentered": True},
    "medtech-reentry": {"charges_reentered": True},
    "pharmacy-reconcile": {"confirmed": True},
    "reentry-important-data": {"done": True},
    "reentry-all-data": {"done": True},
    "technical-review": {"cause": "RAID controller failure", "prevention": "spare controller on site"},
    "fault-report": {"acknowledged": True},
}
NOTICES = {"manual-after-30min": "go-manual-30min", "manual-after-6h": "go-manual-6h", "manual-after-24h": "go-manual-24h"}


def states(run_id) -> list:
    with get_client(sync_client=True) as client:
        return sorted(client.read_flow_run_states(UUID(str(run_id))), key=lambda s: s.timestamp)


def woken_for(history: list, at: datetime) -> tuple[object, object]:
    """The Scheduled state that last set the run going before `at`, and the state the run was in just before it."""
    before = [s for s in history if s.timestamp <= at]
    index = max(i for i, s in enumerate(before) if s.type.value == "SCHEDULED")
    return before[index], before[index - 1] if index else None


def test_his_outage_fallback_notices_fire_while_suspended_and_recovery_stops_the_last(served_stack):
    # The limits count from the fault's time, dated `margin` s ahead: the run (twenty steps, three tracks) must be
    # waiting at the recovery before the first one is due. 11-23 s were measured on a loaded 2-core machine.
    # At time scale 300: 30 min -> 6 s, 6 h -> 72 s, 24 h -> 288 s after the fault.
    margin = 40
    fault = datetime.now(timezone.utc) + timedelta(seconds=margin)
    due = {th: fault + timedelta(minutes=m) / 300 for th, m in (("manual-after-30min", 30), ("manual-after-6h", 360),
                                                                ("manual-after-24h", 1440))}
    run = start_incident("hospital-his-outage", {"fault_time": fault.isoformat(), "drill_outage_minutes": 0},
                         time_scale=300, drill=True, answers=HIS_CLASS_1, incident="durable-his")
    run_id = str(run.id)
    waiting = wait_until("the run to suspend at the recovery", lambda: (s := state_of(run_id)).name == "Suspended"
                         and s.state_details.pause_key.startswith("confirm-recovery") and s, margin + 30)
    assert waiting.timestamp < due["manual-after-30min"], \
        f"the run reached the recovery {(waiting.timestamp - fault).total_seconds():.0f} s after the fault's time: too late"

    def fired() -> list[str]:
        return [e.step for e in journal_from_events(run_id) if e.kind == "threshold.fired"]

    wait_until("the 30-minute notice", fired, margin + 6 + 60)
    wait_until("the run to suspend again", lambda: state_of(run_id).name == "Suspended", 60)
    wait_until("its process to be gone", lambda: flow_process(run_id) is None, 20)
    wait_until("the 6-hour notice", lambda: len(fired()) >= 2, (due["manual-after-6h"] - datetime.now(timezone.utc)).total_seconds() + 60)
    wait_until("the run to suspend again", lambda: state_of(run_id).name == "Suspended", 60)

    result = answer_step(run_id, by="zhou-info-head", values={"stable": "yes"})  # as `runbook answer` does
    assert result.ok, result.message
    answered = datetime.now(timezone.utc)
    assert answered < due["manual-after-24h"]
    final = wait_until("the incident to finish", lambda: (s := state_of(run_id)).is_final() and s, 180)
    assert final.is_completed(), final.message
    journal = wait_until("the close in the journal", lambda: (j := journal_from_events(run_id))
                         and any(e.kind == "incident.closed" for e in j) and j, 30)

    fired_entries = [e for e in journal if e.kind == "threshold.fired"]
    assert [e.step for e in fired_entries] == ["manual-after-30min", "manual-after-6h"], [(e.kind, e.step) for e in journal]
    history = states(run_id)
    for entry in fired_entries:
        assert entry.at >= due[entry.step]
        # due while the run waited suspended (no process): the watcher woke it for this notice, which it then fired
        woke, before = woken_for(history, entry.at)
        assert woke.name == "Resuming" and woke.message == f"escalation watcher: threshold {entry.step}", (entry.step, woke.name, woke.message)
        assert before is not None and before.name == "Suspended" and before.state_details.pause_key.startswith("confirm-recovery"), \
            (entry.step, before and before.name)
        assert before.timestamp < due[entry.step] <= woke.timestamp
    # each notice paged once to each of its people (a drill: the drill desk), the 24-hour one never
    pages = Counter((e.step, e.data.get("person")) for e in journal if e.kind == "page.sent" and e.step in NOTICES.values())
    assert sorted({step for step, _ in pages}) == ["go-manual-30min", "go-manual-6h"], pages
    assert set(pages.values()) == {1}, pages
    notices = [e.step for e in journal if e.kind == "page.sent" and e.step in NOTICES.values()]
    assert notices.index("go-manual-30min") < notices.index("go-manual-6h")
    assert ("threshold.cancelled", "manual-after-24h") in [(e.kind, e.step) for e in journal]
    answered_at = next(e.at for e in journal if e.kind == "step.answered" and e.step == "confirm-recovery")
    assert fired_entries[-1].at < answered_at
    assert [e.kind for e in journal].count("incident.started") == 1


# ---------------------------------------------------------------- 2. restarts mid-incident

SCENARIOS = ROOT / "tests" / "fixtures" / "scenarios"
HEARTBEAT = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}  # as `runbook up` and the workers have it


def journal_kinds(journal, kind: str, step: str | None = None) -> list:
    return [e for e in journal if e.kind == kind and (step is None or e.step == step)]


def test_restarting_the_watcher_the_server_and_the_runner_loses_and_repeats_no_timer(tmp_path):
    """restart-drill at time scale 10 waits suspended at `confirm-restored`: tiers after 6 s, 60 s and 180 s, a
    reminder 36 s after the last page, a threshold 30 s after the start. Each outage is held until a timer has
    come due inside it: the watcher's (tier 1), the server's (the threshold), the runner's (a reminder)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.inputs import read_json, who_key
    from tests.alerts.procs import PrefectServer, Served, stop_process

    server = PrefectServer(tmp_path / "prefect").start(timeout=180)
    runner = Served(server.api, server.home, SCENARIOS, log=tmp_path / "serve.log", **HEARTBEAT)
    watcher: list[subprocess.Popen] = []

    def start_watcher() -> None:
        with open(tmp_path / "watcher.log", "a") as log:
            watcher.append(subprocess.Popen([sys.executable, "-m", "app.stack", "watcher", "1"], cwd=ROOT, env=runner.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def logs() -> str:
        return "\n".join(f"---- {name} (end)\n{(tmp_path / name).read_text(errors='replace')[-2500:]}"
                         for name in ("serve.log", "watcher.log") if (tmp_path / name).exists())

    def journal() -> list:
        return journal_from_events(run_id)

    def idle() -> None:
        """Until the run waits suspended with no process: a runner stopped while the process of a run that has just
        suspended is still exiting reports the run Crashed (the watcher then recovers it, spending one recovery)."""
        wait_until("the wait to suspend with no process left", lambda: state_of(run_id).name == "Suspended"
                   and flow_process(run_id) is None, 90)

    def sleep_until(when: datetime) -> None:
        time.sleep(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()))

    try:
        runner.start(["restart-drill"], timeout=180)
        start_watcher()
        with temporary_settings(updates={PREFECT_API_URL: server.api}):
            run_id = str(start_incident("restart-drill", {}, time_scale=10).id)
            waiting = wait_until("the wait to suspend", lambda: (s := state_of(run_id)).name == "Suspended" and s, 90)
            with get_client(sync_client=True) as client:
                who = read_json(client, UUID(run_id), who_key(waiting.state_details.run_input_keyset))
            tier_due = [datetime.fromisoformat(t["at"]) for t in who["tiers"]]
            threshold_due = next(datetime.fromisoformat(t["at"]) for t in who["timers"] if t["what"] == "threshold five-minutes")

            # 1. the watcher, down while tier 1 comes due
            stop_process(watcher[-1])
            assert datetime.now(timezone.utc) < tier_due[0], "the watcher stopped after tier 1 was due: the run suspended too late"
            sleep_until(tier_due[0] + timedelta(seconds=1))
            assert not journal_kinds(journal(), "escalation.tier"), "nobody pages while no watcher runs"
            start_watcher()
            wait_until("tier 1 from the restarted watcher", lambda: journal_kinds(journal(), "escalation.tier"), 60)

            # 2. the server, down at least 10 s and while the threshold comes due
            idle()
            down = datetime.now(timezone.utc)
            assert down < threshold_due, "the server stopped after the threshold was due: the watcher restart took too long"
            server.stop()
            sleep_until(max(down + timedelta(seconds=10), threshold_due + timedelta(seconds=1)))
            server.start(timeout=180)
            wait_until("the threshold after the server's restart", lambda: journal_kinds(journal(), "threshold.fired"), 120)
            idle()

            # 3. the runner, down while a reminder comes due: the watcher wakes the run, which waits for a runner
            runner.stop()
            reminders_before = len(journal_kinds(journal(), "escalation.reminder"))
            woken = wait_until("the watcher to wake the run with no runner", lambda: (s := state_of(run_id)).name == "Resuming" and s, 90)
            assert woken.message == "escalation watcher: reminder", woken.message
            time.sleep(2)
            assert state_of(run_id).name == "Resuming", "nothing runs the woken run while the runner is down"
            runner.start(["restart-drill"], timeout=180)
            wait_until("the reminder after the runner's restart",
                       lambda: len(journal_kinds(journal(), "escalation.reminder")) > reminders_before, 90)

            wait_until("tier 2", lambda: len(journal_kinds(journal(), "escalation.tier")) >= 2,
                       (tier_due[1] - datetime.now(timezone.utc)).total_seconds() + 60)
            idle()
            result = answer_step(run_id, by="wang-chief", values={"restored": "yes"})
            assert result.ok, result.message
            answered = datetime.now(timezone.utc)
            assert answered < tier_due[2]
            final = wait_until("the incident to finish", lambda: (s := state_of(run_id)).is_final() and s, 90)
            assert final.is_completed(), final.message
            entries = wait_until("the close in the journal", lambda: (j := journal())
                                 and journal_kinds(j, "incident.closed") and j, 30)
            with get_client(sync_client=True) as client:
                reminder_claims = client.filter_flow_run_input(UUID(run_id), "once-reminder-", 100, set())
    except BaseException:
        print(logs())
        raise
    finally:
        for proc in watcher:
            stop_process(proc)
        runner.stop()
        server.stop()

    # every tier due before the answer paged once, the one not due never
    tiers = journal_kinds(entries, "escalation.tier", "confirm-restored")
    assert [e.data.get("tier") for e in tiers] == [1, 2], [(e.kind, e.step, e.data) for e in entries]
    assert [e.data.get("roles") for e in tiers] == [["deputy-operator"], ["leading-group-head"]]
    # the threshold fired once and its notice paged dispatch once
    assert len(journal_kinds(entries, "threshold.fired", "five-minutes")) == 1
    assert [e.data.get("person") for e in journal_kinds(entries, "page.sent", "tell-dispatch")] == ["zhao-dispatch"]
    # each reminder once: one per claim, never two closer than the reminder's period
    reminders = journal_kinds(entries, "escalation.reminder", "confirm-restored")
    assert reminders and len(reminders) == len(reminder_claims), (len(reminders), [c.key for c in reminder_claims])
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(reminders, reminders[1:])]
    assert all(gap > 30 for gap in gaps), gaps
    # the wait's pages: the first ask, each tier, each reminder; each to one person, once
    pages = journal_kinds(entries, "page.sent", "confirm-restored")
    assert len(pages) == 1 + len(tiers) + len(reminders), [(e.at, e.data.get("person")) for e in pages]
    assert pages[0].data.get("person") == "wang-chief"
    assert not [e for e in entries if e.kind.startswith("page.") and e.kind != "page.sent"]
    assert len(journal_kinds(entries, "incident.started")) == 1
    assert not journal_kinds(entries, "incident.recovered"), "no restart crashed the incident"
    assert len(journal_kinds(entries, "step.answered", "confirm-restored")) == 1
