"""The watcher pages the due tiers of several suspended runs side by side, each tier once (flows/escalation.py: wake_due)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

RUNBOOK = """\
id: watcher-paging
title: {zh: 升级, en: Paging}
description: {zh: 测试, en: Test}
source: {plan: 9, title: 测试}
roles:
  duty-manager: {label: {zh: 值班经理, en: Duty manager}}
lead: duty-manager
steps:
  - id: confirm
    kind: manual
    title: {zh: 确认, en: Confirm}
    escalation:
      - after: 10m
        notify: [duty-manager]
"""


@pytest.fixture
def pager(tmp_path, monkeypatch):
    """A webhook standing in for the duty manager's pager (incident ids, one per page), and the settings that use it."""
    pages: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            pages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["incident_id"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "watcher-paging.yaml").write_text(RUNBOOK, encoding="utf-8")
    (tmp_path / "contacts.yaml").write_text(textwrap.dedent(f"""\
        people:
          - id: manager
            name: Manager
            roles: [duty-manager]
            channels: [{{channel: webhook, to: "http://127.0.0.1:{server.server_port}/page"}}]
        """), encoding="utf-8")
    from runbooks.settings import get_settings

    monkeypatch.setenv("RUNBOOK_RUNBOOKS_DIR", str(tmp_path / "runbooks"))
    monkeypatch.setenv("RUNBOOK_CONTACTS_FILE", str(tmp_path / "contacts.yaml"))
    get_settings.cache_clear()
    yield pages
    get_settings.cache_clear()
    server.shutdown()


def suspended(client, n: int, deployed: bool = False, due_in: float = -1.0) -> list[str]:
    """N runs Suspended at a manual step whose one tier came due a second ago (or comes due `due_in` seconds from
    now), as tasks/people.py leaves them (`deployed`: runs of a deployment, which Prefect lets a wake reschedule)."""
    from prefect import flow
    from prefect.input.run_input import keyset_from_paused_state
    from prefect.states import Paused

    from tasks.inputs import next_due_message, who_key

    @flow(name="watcher-paging")
    def waiting():
        pass

    at = (datetime.now(timezone.utc) + timedelta(seconds=due_in)).isoformat()
    ids = []
    for i in range(n):
        if deployed:
            deployment = client.create_deployment(client.create_flow_from_name("watcher-paging"), "watcher-paging")
            run = client.create_flow_run_from_deployment(deployment, tags=["runbook:watcher-paging"])
        else:
            run = client.create_flow_run(waiting, tags=["runbook:watcher-paging"])
        state = Paused(timeout_seconds=None, reschedule=True, pause_key="confirm-1", name="Suspended",
                       message=next_due_message([{"what": "tier 1", "at": at}]))
        state.state_details.run_input_keyset = keyset_from_paused_state(state)
        client.set_flow_run_state(run.id, state, force=True)
        who = {"runbook": "watcher-paging", "step": "confirm", "kind": "manual", "may_answer": [], "paged": [],
               "waiting_since": at, "wait_key": f"confirm-{i}", "expires_at": None,
               "tiers": [{"at": at, "roles": ["duty-manager"], "text": f"page {i}", "plan_seconds": 600}],
               "timers": [{"what": "tier 1", "at": at}]}
        client.create_flow_run_input(run.id, key=who_key(state.state_details.run_input_keyset), value=json.dumps(who))
        ids.append(str(run.id))
    return ids


def test_due_tiers_of_several_runs_are_paged_side_by_side_once_each(pager, monkeypatch):
    from prefect.client.orchestration import get_client

    import flows.escalation as escalation
    from tasks.inputs import read_json, read_input, who_key

    at_once, most, lock = [0], [0], threading.Lock()
    page_tier = escalation.page_tier

    def counted(*args, **kwargs):
        with lock:
            at_once[0] += 1
            most[0] = max(most[0], at_once[0])
        try:
            time.sleep(0.2)  # a slow pager: the lanes overlap
            return page_tier(*args, **kwargs)
        finally:
            with lock:
                at_once[0] -= 1

    monkeypatch.setattr(escalation, "page_tier", counted)
    with get_client(sync_client=True) as client:
        ids = suspended(client, 6)
        assert escalation.wake_due(client, lanes=3) == []  # a tier is paged without waking the run
        assert sorted(pager) == sorted(ids)
        assert 1 < most[0] <= 3
        escalation._next_look.clear()  # as two watchers of their own would: each reads every record once
        again = [threading.Thread(target=escalation.wake_due, args=(client,)) for _ in range(2)]  # two more passes at once
        for t in again:
            t.start()
        for t in again:
            t.join(60)
        assert sorted(pager) == sorted(ids)  # each tier once, whoever got there first
        for run_id in ids:
            run = client.read_flow_run(run_id)
            assert run.state.name == "Suspended"
            # the tier's claim is what says it was paged; a wait that does not remind keeps its record as it was
            assert read_json(client, run.id, who_key(run.state.state_details.run_input_keyset))["paged"] == []
            assert read_input(client, run.id, "once-tier-confirm-" + str(ids.index(run_id)) + "-1") is not None


def test_a_wait_whose_tier_was_paged_is_not_read_again_until_its_next_tier(pager, monkeypatch):
    """The state's message names the first tier only; the watcher remembers when the record next needs a look."""
    from prefect.client.orchestration import get_client

    import flows.escalation as escalation
    from tasks.inputs import who_key

    reads: list[str] = []
    read_json = escalation.read_json
    monkeypatch.setattr(escalation, "read_json", lambda client, run_id, key: reads.append(str(run_id)) or read_json(client, run_id, key))
    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True)
        run = client.read_flow_run(run_id)
        key = who_key(run.state.state_details.run_input_keyset)
        who = json.loads(client.read_flow_run_input(run.id, key))
        second = datetime.now(timezone.utc) + timedelta(seconds=3)
        who["tiers"].append({"at": second.isoformat(), "roles": ["duty-manager"], "text": "page again", "plan_seconds": 1200})
        client.delete_flow_run_input(run.id, key)
        client.create_flow_run_input(run.id, key=key, value=json.dumps(who))

        assert escalation.wake_due(client) == [] and pager == [run_id] and reads == [run_id]  # tier 1 paged
        for _ in range(3):  # passes before tier 2 is due: nothing read
            assert escalation.wake_due(client) == []
        assert reads == [run_id] and pager == [run_id]
        time.sleep(max(0.0, (second - datetime.now(timezone.utc)).total_seconds()) + 0.1)
        # tier 2, when due, from the record the watcher kept (with tier 1 paged in it): no second read
        assert escalation.wake_due(client) == [] and pager == [run_id, run_id] and len(reads) == 1
        assert escalation.wake_due(client) == [] and len(reads) == 1  # and nothing more to look at


def test_a_reminder_counts_from_the_tier_the_watcher_paged(pager, monkeypatch):
    """A tier paged by the watcher is the last page: the wait's reminder repeats it `remind_every` later, so the run
    is not woken at the old reminder time only to find nothing to send."""
    from prefect.client.orchestration import get_client

    import flows.escalation as escalation
    from tasks.inputs import who_key
    from tasks.tiers import reminder_timer

    reasons: list = []  # why the watcher would wake the run, each time it looks (a run of no deployment cannot be woken)
    due = escalation.due
    monkeypatch.setattr(escalation, "due", lambda who, now, done=lambda claim: False: reasons.append(due(who, now, done)) or reasons[-1])
    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True)
        run = client.read_flow_run(run_id)
        key = who_key(run.state.state_details.run_input_keyset)
        who = json.loads(client.read_flow_run_input(run.id, key))
        began = datetime.now(timezone.utc) - timedelta(seconds=2)
        who.update(waiting_since=began.isoformat(), last_page=began.isoformat())
        who["timers"].append(reminder_timer("confirm", began.timestamp(), began.timestamp(), 3.0))  # due 1 s from now
        client.delete_flow_run_input(run.id, key)
        client.create_flow_run_input(run.id, key=key, value=json.dumps(who))

        paged_at = datetime.now(timezone.utc)
        escalation.wake_due(client)
        assert pager == [run_id] and reasons == [None]  # tier 1 paged by the watcher, nothing to wake for
        reminder = next(t for t in json.loads(client.read_flow_run_input(run.id, key))["timers"] if t["what"] == "reminder")
        assert datetime.fromisoformat(reminder["at"]) >= paged_at + timedelta(seconds=3)
        time.sleep(1.5)  # past the old reminder time
        escalation.wake_due(client)
        assert reasons == [None], "the run would be woken for a reminder that the tier's page made early"
        time.sleep(max(0.0, (datetime.fromisoformat(reminder["at"]) - datetime.now(timezone.utc)).total_seconds()) + 0.1)
        escalation.wake_due(client)
        assert reasons == [None, "reminder"]


def test_a_wait_that_reminds_only_after_a_tier_gets_its_reminder_from_the_watchers_page(pager):
    """A wait with `remind_every` and no first page has no reminder while it suspends; once the watcher pages its
    tier, the record gets one, `remind_every` after that page (as the run's own loop would have it)."""
    from prefect.client.orchestration import get_client

    import flows.escalation as escalation
    from tasks.inputs import who_key

    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True)
        run = client.read_flow_run(run_id)
        key = who_key(run.state.state_details.run_input_keyset)
        who = json.loads(client.read_flow_run_input(run.id, key))
        who.update(remind_every=60.0, last_page=who["waiting_since"])
        client.delete_flow_run_input(run.id, key)
        client.create_flow_run_input(run.id, key=key, value=json.dumps(who))

        paged_at = datetime.now(timezone.utc)
        assert escalation.wake_due(client) == [] and pager == [run_id]
        after = json.loads(client.read_flow_run_input(run.id, key))
        [reminder] = [t for t in after["timers"] if t["what"] == "reminder"]
        assert paged_at + timedelta(seconds=60) <= datetime.fromisoformat(reminder["at"]) <= datetime.now(timezone.utc) + timedelta(seconds=60)
        assert reminder["claim"].startswith("reminder-confirm-") and after["paged"] == [0]


def test_a_wait_whose_tier_comes_due_soon_has_its_record_read_ahead(pager, monkeypatch):
    """The watcher's loop reads a wait's record up to AHEAD_SECONDS before its first timer, so that when 250 tiers
    come due together each is a claim and a page, not a read first."""
    import flows.escalation as escalation
    from flows.lanes import Lanes
    from prefect.client.orchestration import get_client

    reads: list[str] = []
    read_json = escalation.read_json
    monkeypatch.setattr(escalation, "read_json", lambda client, run_id, key: reads.append(str(run_id)) or read_json(client, run_id, key))
    lanes, ahead = Lanes(2), Lanes(1)
    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True, due_in=3.0)
        assert escalation.wake_due(client, lanes=lanes, ahead=ahead) == [] and pager == []  # not due yet: read ahead
        deadline = time.monotonic() + 10
        while reads != [run_id] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reads == [run_id]
        time.sleep(3.2)
        escalation.wake_due(client, lanes=lanes, ahead=ahead)
        while pager != [run_id] and time.monotonic() < deadline + 5:
            time.sleep(0.1)
        assert pager == [run_id] and reads == [run_id], "paged when due, from the record read ahead"


def test_a_resumed_run_learns_from_the_claims_which_tiers_went_out_while_it_was_suspended(pager):
    """The watcher does not write the wait's record again for a tier it pages: the run that resumes reads the tiers'
    claims, so it neither claims them again nor counts its reminders from the wrong page."""
    from prefect.client.orchestration import get_client

    from tasks.tiers import epoch, paged_meanwhile

    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1)
        first, second = "2026-12-01T10:00:00+00:00", "2026-12-01T10:10:00+00:00"
        for name, at in (("once-tier-confirm-1700-1", first), ("once-tier-confirm-1700-2", second),
                         ("once-tier-confirm-1700-9", second), ("once-tier-confirm-17001-3", second)):
            client.create_flow_run_input(run_id, key=name, value=at)
        paged: set[int] = set()
        assert paged_meanwhile(run_id, "confirm-1700", 3, paged, epoch(first) - 60) == epoch(second)
        assert paged == {0, 1}, "tiers 1 and 2 of this wait; not a tier it does not have, nor another wait's"


def test_the_watchers_lanes_take_a_run_once_at_a_time_and_do_not_hold_up_the_pass():
    """The watcher's loop hands due runs to lanes that outlive a pass (flows/lanes.py): a pass returns at once,
    a run still in hand is not handed over again, and one run's failure is logged, not the lanes' end."""
    from types import SimpleNamespace
    from uuid import uuid4

    from flows.lanes import Lanes

    release = threading.Event()
    calls: list[str] = []

    def slow(client, run):
        calls.append(run.name)
        release.wait(10)
        if run.name == "broken":
            raise RuntimeError("Prefect restarting")
        return (str(run.id), "reminder")

    lanes = Lanes(2)
    slow_run, broken = SimpleNamespace(id=uuid4(), name="slow"), SimpleNamespace(id=uuid4(), name="broken")
    began = time.monotonic()
    assert lanes.submit(slow_run, slow) and lanes.submit(broken, slow)
    assert time.monotonic() - began < 1, "handing over waits for nobody"
    assert not lanes.submit(slow_run, slow), "a run in hand is not handed over twice"
    assert lanes.finished() == [] and lanes.in_hand() == 2 and lanes.backlog() == 0
    third = SimpleNamespace(id=uuid4(), name="third")
    assert lanes.submit(third, lambda client, run: None) and lanes.backlog() == 1, "more than the lanes can work on"
    release.set()
    deadline = time.monotonic() + 10
    while lanes.in_hand() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(map(str, lanes.finished())) == sorted(["None", "None", str((str(slow_run.id), "reminder"))])
    assert lanes.submit(slow_run, slow), "once done, the run can be handed over again"
    deadline = time.monotonic() + 10
    while lanes.in_hand() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls.count("slow") == 2 and calls.count("broken") == 1


def test_a_run_read_before_it_was_woken_is_not_woken_again(pager):
    """The lanes work on while the next pass reads the runs, so a pass may hand over a run as it was before a lane
    woke it. That stale look must not propose Scheduled again (it could pull a started run back)."""
    from prefect.client.orchestration import get_client

    import flows.escalation as escalation
    from tasks.inputs import put_input, read_json, who_key

    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True)
        run = client.read_flow_run(run_id)
        key = who_key(run.state.state_details.run_input_keyset)
        who = read_json(client, run.id, key)
        who.update(paged=[0], expires_at=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
        put_input(client, run.id, key, json.dumps(who), exists=True)
        now = datetime.now(timezone.utc)
        assert escalation._look_after(client, run, now) == (run_id, "expired")
        assert escalation._look_after(client, run, now) is None  # the same, stale, view of the run
        names = [s.name for s in client.read_flow_run_states(run.id)]
    assert names.count("Resuming") == 1, names


def test_a_tier_of_a_run_answered_since_the_pass_read_it_is_not_paged(pager):
    """The pass reads the waiting runs, then its lanes page their due tiers: a run answered in between (its state
    moved on) must not have its tier paged from that stale look."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    import flows.escalation as escalation

    with get_client(sync_client=True) as client:
        [run_id] = suspended(client, 1, deployed=True)
        stale = client.read_flow_run(run_id)
        client.set_flow_run_state(run_id, Scheduled(name="Resuming", message="answered"), force=True)
        escalation._look_after(client, stale, datetime.now(timezone.utc))
    time.sleep(1)
    assert pager == [], "no page for a wait that was answered"
