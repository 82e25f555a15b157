"""A storm spooled at once: the drainer hands groups over side by side, and still starts exactly one
incident per group, keeps each group's order (firing before resolved) and loses no alert, also when
Prefect goes away in the middle or the process dies before it marked a batch done."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import httpx

from app.intake import Drainer, Intake, idempotency_key
from integrations.alerts import get_source
from integrations.alerts.model import Alert
from integrations.alerts.store import Store
from tests.alerts.conftest import FakePrefect, wait_until

GROUPS = 60
PER_GROUP = 5   # 300 alerts
STARTS = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


def storm(seed: int = 3) -> tuple[list[dict], dict[str, list[str]]]:
    """Spool items for GROUPS groups, interleaved at random, each group's own alerts in order; and the outcomes
    each group must get, in that order. A group has one or two alerts (instances) that fire, fire again
    (repeats), then resolve: the last to resolve hands the resolution over."""
    rng = random.Random(seed)
    per_group, expected = {}, {}
    for g in range(GROUPS):
        instances = ["a", "b"][:rng.randint(1, 2)]
        firing = instances + [rng.choice(instances) for _ in range(PER_GROUP - 2 * len(instances))]
        alerts = [{"status": "firing", "title": f"StormDown{g}", "labels": {"site": f"s{g}", "instance": i},
                   "starts_at": (STARTS + timedelta(minutes=instances.index(i))).isoformat(), "group": f"storm-{g}"}
                  for i in firing]
        alerts += [{**a, "status": "resolved"} for a in alerts[:len(instances)]]
        per_group[f"storm-{g}"] = alerts
        expected[f"generic:storm-{g}"] = (["started"] + ["joined"] * (len(firing) - 1)
                                          + ["partly-resolved"] * (len(instances) - 1) + ["resolution-delivered"])
    queues = {k: list(v) for k, v in per_group.items()}
    raw = []
    while queues:
        key = rng.choice(sorted(queues))
        raw.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    alerts = get_source("generic").parse({"alerts": raw})
    items = [{"alert": a.model_dump(mode="json"),
              "decision": {"runbook": "storm", "parameters": {"site": a.labels["site"]}, "severity": "1"}} for a in alerts]
    return items, expected


def intake_for(store: Store, fake: FakePrefect, start=None) -> Intake:
    return Intake(store, start_incident=start or fake.start_incident, deliver_resolution=fake.deliver_resolution,
                  run_is_open=fake.run_is_open, emit=fake.emit, health=fake.health)


def drain_all(drainer: Drainer, store: Store, timeout: float = 60) -> None:
    drainer.start()
    drainer.wake()
    try:
        wait_until(lambda: store.pending_count() == 0, timeout, "the storm to drain")
    finally:
        drainer.stop()


def check(store: Store, fake: FakePrefect, expected: dict[str, list[str]]) -> None:
    rows = store.spool_rows()
    assert len(rows) == GROUPS * PER_GROUP
    assert [r["state"] for r in rows if r["state"] != "done"] == []  # nothing lost, nothing set aside
    assert len(fake.runs) == GROUPS  # exactly one incident per group
    assert len({r["idempotency_key"] for r in fake.runs}) == GROUPS
    assert sorted(r["parameters"]["site"] for r in fake.runs) == sorted(f"s{g}" for g in range(GROUPS))
    run_of = {r["idempotency_key"]: r["id"] for r in fake.runs}
    assert sorted(run_id for run_id, _ in fake.resolutions) == sorted(run_of.values())  # one resolution each

    # each group's alerts were handled in their order, all against its one incident
    got: dict[str, list[str]] = {}
    runs: dict[str, set[str]] = {}
    for row in rows:
        item = json.loads(row["item"])
        group = f"{item['alert']['source']}:{item['alert']['group_key']}"
        what, _, run_id = row["outcome"].partition(" ")
        got.setdefault(group, []).append(what)
        runs.setdefault(group, set()).add(run_id)
    assert got == expected
    assert all(len(ids) == 1 for ids in runs.values())


def test_a_storm_spooled_at_once_starts_one_incident_per_group_and_loses_nothing(tmp_path):
    items, expected = storm()
    store = Store(tmp_path)
    store.append(items)
    fake = FakePrefect()
    drain_all(Drainer(intake_for(store, fake)), store)
    check(store, fake, expected)


def bulk_intake(store: Store, fake: FakePrefect, start_incidents=None) -> Intake:
    """The intake as `runbook up` has it: the batch's first alerts start their incidents in one bulk create."""
    return Intake(store, start_incident=fake.start_incident, start_incidents=start_incidents or fake.start_incidents,
                  deliver_resolution=fake.deliver_resolution, run_is_open=fake.run_is_open, open_runs=fake.open_runs,
                  emit=fake.emit, health=fake.health)


def test_a_storms_incidents_start_together_in_one_bulk_create_per_batch(tmp_path):
    """Each group's first alert finds its incident created ahead, in one request for the batch: its outcome is
    still `started` (and the group's order, the one incident per group, the resolutions are as before), and no
    alert starts one of its own."""
    items, expected = storm()
    store = Store(tmp_path)
    store.append(items)
    fake = FakePrefect()
    drain_all(Drainer(bulk_intake(store, fake), batch=len(items)), store)
    check(store, fake, expected)
    assert [len(keys) for keys in fake.bulk_calls] == [GROUPS]
    assert len(fake.starts) == GROUPS  # each run asked for once: by the bulk create, none again by its alert


def test_runs_the_bulk_create_did_not_make_are_started_by_their_alerts(tmp_path):
    """A bulk create that fails, or that makes only some of the runs, loses nothing: the rest start in turn, and
    what it made is used (each run asked for once)."""
    for seed, bulk in ((6, "fails"), (7, "half")):
        items, expected = storm(seed=seed)
        store = Store(tmp_path / bulk)
        store.append(items)
        fake = FakePrefect()
        asked = []

        def start_some(runbook_id, starts, bulk=bulk, fake=fake):
            asked.append(len(starts))
            if bulk == "fails":
                raise httpx.HTTPStatusError("404", request=httpx.Request("POST", "http://x"), response=httpx.Response(404))
            return fake.start_incidents(runbook_id, starts[::2])

        drain_all(Drainer(bulk_intake(store, fake, start_some), batch=len(items)), store)
        check(store, fake, expected)
        assert asked == [GROUPS] and len(fake.starts) == GROUPS, (bulk, asked, len(fake.starts))


def test_only_the_alerts_that_start_an_episode_are_created_ahead(tmp_path):
    """A second storm over the same groups once their incidents closed: the alerts that repeat what a closed
    incident had start nothing; the newer ones start episode 2, created ahead; resolutions start nothing."""
    store = Store(tmp_path)
    fake = FakePrefect()
    items, _ = storm(seed=9)
    store.append(items)
    drain_all(Drainer(bulk_intake(store, fake), batch=len(items)), store)
    fake.close_all()
    again = [json.loads(json.dumps(item)) for item in items]
    newer = {f"storm-{g}" for g in range(0, GROUPS, 2)}  # half the groups fire again, later
    for item in again:
        if item["alert"]["group_key"] in newer:
            item["alert"]["starts_at"] = (STARTS + timedelta(hours=1)).isoformat()
    fake.bulk_calls.clear()
    store.append(again)
    drain_all(Drainer(bulk_intake(store, fake), batch=len(again)), store)

    groups = {item["alert"]["group_key"]: Alert.model_validate(item["alert"]).group for item in items}
    assert [sorted(keys) for keys in fake.bulk_calls] == [sorted(idempotency_key("storm", groups[g], 2) for g in newer)]
    assert len(fake.runs) == GROUPS + len(newer)
    outcomes = {}
    for row in store.spool_rows()[len(items):]:
        item = json.loads(row["item"])
        outcomes.setdefault(item["alert"]["group_key"], []).append(row["outcome"].split()[0])
    for group, seen in outcomes.items():
        assert seen[0] == ("started" if group in newer else "repeat-of-closed"), (group, seen)


def test_a_bulk_create_asked_again_after_a_crash_gives_the_same_incidents(tmp_path):
    """The process dies after the bulk create, before any alert of the batch is marked: the next drainer creates
    them again under the same keys, which give the same runs."""
    items, expected = storm(seed=8)
    store = Store(tmp_path)
    store.append(items)
    fake = FakePrefect()
    first = Drainer(bulk_intake(store, fake), batch=len(items))
    pending = first.spool.pending(len(items))
    heads = list({item.item["alert"]["group_key"]: item.item for item in reversed(pending)}.values())
    first.intake.read_open(heads)
    first.intake.start_ahead(heads)  # what drain() does first; then the process dies
    first.stop()
    assert len(fake.runs) == GROUPS and store.pending_count() == len(items)

    drain_all(Drainer(bulk_intake(store, fake), batch=len(items)), store)
    check(store, fake, expected)


def test_prefect_away_in_the_middle_of_a_storm(tmp_path):
    """From the 20th start on, Prefect is unreachable for half a second: those groups wait (their later alerts
    behind them), the drainer backs off and tries again; in the end every alert is handled, each group in
    order, one incident each."""
    items, expected = storm(seed=4)
    store = Store(tmp_path)
    store.append(items)
    fake = FakePrefect()
    calls, away = [], []

    def flaky_start(*args, **kwargs):
        calls.append(1)
        if len(calls) == 20:
            away.append(time.monotonic() + 0.5)
        if away and time.monotonic() < away[0]:
            raise httpx.ConnectError("All connection attempts failed")
        return fake.start_incident(*args, **kwargs)

    drain_all(Drainer(intake_for(store, fake, flaky_start), first_delay=0.05, max_delay=0.5), store)
    assert len(calls) > GROUPS  # some were refused and asked again
    check(store, fake, expected)


def test_process_dies_before_a_batch_is_marked_done(tmp_path):
    """Everything of a batch handed over, then the process dies before the spool says so: the next drainer
    hands the batch over again, and the same idempotency keys give the same incidents."""
    items, expected = storm(seed=5)
    store = Store(tmp_path)
    store.append(items)
    fake = FakePrefect()
    first = Drainer(intake_for(store, fake), batch=100)

    def die(results):
        raise SystemExit("killed")  # not an Exception: nothing in the drainer catches it

    first.spool.record = die
    try:
        first.drain()
    except SystemExit:
        pass
    first.stop()
    assert store.pending_count() == len(items) and len(fake.runs) > 0

    drain_all(Drainer(intake_for(store, fake)), store)
    assert len(fake.runs) == GROUPS
    # the replayed batch was asked again with the same keys: its alerts now join the incidents they started
    rows = store.spool_rows()
    assert [r["state"] for r in rows if r["state"] != "done"] == []
    assert len({r["idempotency_key"] for r in fake.runs}) == GROUPS
    assert sorted(run_id for run_id, _ in fake.resolutions) == sorted(r["id"] for r in fake.runs)  # one each
