"""A heal that fails half way is finished, never dropped; a watcher that was cut off from Prefect judges nobody dead.

Both came from the served outage drill (tests/alerts/test_outage_served.py) on a loaded machine: a watcher's pass
hung through Prefect's outage, and the next pass took three live incidents for dead (their heartbeats had nowhere
to go); and a watcher whose claim on a crash landed but whose next request met Prefect's 503 left that crash
claimed and unhealed for good.
"""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.states import Crashed

from flows import escalation, recovery
from tasks.client import sync_client


@flow(name="healing-claims")
def _noop() -> None:
    pass


@pytest.fixture
def crashed():
    """A crashed flow run on the test's Prefect server, and a client."""
    with sync_client() as client:
        run = client.create_flow_run(_noop, state=Crashed(message="its process died"))
        yield client, client.read_flow_run(run.id)


def test_a_watcher_finishes_its_own_claimed_heal_and_another_takes_it_over_only_once_it_is_old(crashed, monkeypatch):
    client, run = crashed
    monkeypatch.setattr(recovery, "WATCHER", "first")
    assert recovery._take(client, run)
    assert recovery._take(client, run), "its own claim: the heal it could not finish is tried again"
    monkeypatch.setattr(recovery, "WATCHER", "second")
    assert not recovery._take(client, run), "another watcher's claim, fresh"
    monkeypatch.setattr(recovery, "CLAIM_HELD", 0.0)
    time.sleep(0.01)
    assert recovery._take(client, run), "held too long: its watcher died with it"
    assert recovery._take(client, run)
    monkeypatch.setattr(recovery, "WATCHER", "first")
    monkeypatch.setattr(recovery, "CLAIM_HELD", 60.0)
    assert not recovery._take(client, run), "the first watcher, back, finds it taken over"


def test_a_crash_whose_heal_is_tried_again_counts_as_one_recovery(crashed):
    client, run = crashed

    def attempt(state_run) -> int | None:
        return recovery._attempt(client, state_run, recovery.inputs_under(client, run.id, "once-recovery-"), 2)

    assert attempt(run) == 1
    assert attempt(run) == 1, "the same crash, tried again: not a second recovery"
    client.set_flow_run_state(run.id, Crashed(message="crashed again"), force=True)
    again = client.read_flow_run(run.id)
    assert attempt(again) == 2
    client.set_flow_run_state(run.id, Crashed(message="and again"), force=True)
    assert attempt(client.read_flow_run(run.id)) is None, "both recoveries used"


@pytest.mark.parametrize("hangs_in", ["wake_due", "heal_crashed"])
def test_a_pass_that_hung_while_prefect_was_away_judges_nobody_dead_until_a_silence_limit_after(monkeypatch, hangs_in):
    """The hang may come before the judgement (the pass's waits) or after the last one (the pass's heals)."""
    limit, passes, judged, hung = 0.4, [], [], []

    def wake_due(client, **kw):
        passes.append(time.monotonic())
        return []

    def heal_crashed(client):
        return []

    def hanging(fn):
        def hangs(*args, **kw):
            if len(passes) == 2 and not hung:  # a request in flight when Prefect went away, answered when it came back
                time.sleep(limit / 2)
                hung.append(time.monotonic())
            return fn(*args, **kw)
        return hangs

    def sleep(seconds):
        if len(passes) >= 14:
            raise KeyboardInterrupt
        time.sleep(0.05)

    monkeypatch.setattr(escalation, "silence_limit", lambda: limit)
    monkeypatch.setattr(escalation, "sync_client", lambda: contextlib.nullcontext(None))
    monkeypatch.setattr(escalation, "wake_due", hanging(wake_due) if hangs_in == "wake_due" else wake_due)
    monkeypatch.setattr(escalation, "heal_crashed", hanging(heal_crashed) if hangs_in == "heal_crashed" else heal_crashed)
    monkeypatch.setattr(escalation, "declare_dead", lambda client: judged.append(time.monotonic()) or [])
    monkeypatch.setattr(escalation, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    with pytest.raises(KeyboardInterrupt):
        escalation.watch(0.05)
    after = [t for t in judged if t > hung[0]]
    assert after, "a silence limit after the hang, silence is judged again"
    assert after[0] >= hung[0] + limit, (after[0] - hung[0], limit)
