"""A step's start is held a moment and goes with its step.done as one event (tasks/journal.py); read back, the
journal has both lines, at their own times, whatever way the start went."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

import tasks.journal as journal
from flows.record.timeline import journal_from_events
from tasks.journal import Entry, Post, entries_of
from tests.alerts.procs import wait_for


@pytest.fixture
def sent(monkeypatch):
    """What the post hands to Prefect: (kind, step, the start it carries)."""
    out: list[tuple[str, str | None, Entry | None]] = []
    monkeypatch.setattr(journal, "emit_entry", lambda incident, runbook, entry, drill=False, started=None:
                        out.append((entry.kind, entry.step, started)))
    return out


def test_a_quick_step_goes_as_one_event_carrying_its_start(sent):
    post = Post()
    start = Entry(kind="step.started", step="call", text="呼叫 / Call", data={"step_kind": "action"})
    post.send("inc", "rb", start)
    assert sent == [], "the start waits for its step a moment"
    post.send("inc", "rb", Entry(kind="step.done", step="call", text="status_code=200"))
    assert [(kind, step) for kind, step, _ in sent] == [("step.done", "call")]
    assert sent[0][2] is start


def test_anything_else_about_the_step_sends_its_start_first(sent):
    post = Post()
    post.send("inc", "rb", Entry(kind="step.started", step="notify"))
    post.send("inc", "rb", Entry(kind="step.started", step="other"))  # another step's start does not
    post.send("inc", "rb", Entry(kind="page.sent", step="notify"))
    post.send("inc", "rb", Entry(kind="step.done", step="notify"))
    assert [(kind, step, started is not None) for kind, step, started in sent] == [
        ("step.started", "notify", False), ("page.sent", "notify", False), ("step.done", "notify", False)]


def test_a_long_step_has_its_start_sent_alone_when_the_moment_is_up(sent, monkeypatch):
    monkeypatch.setattr(journal, "HOLD_SECONDS", 0.2)
    post = Post()
    began = time.monotonic()
    post.send("inc", "rb", Entry(kind="step.started", step="wait-for-chief"))
    wait_for(lambda: sent, 5, "the start, sent by the post's thread", every=0.02)
    assert time.monotonic() - began >= 0.2
    assert sent == [("step.started", "wait-for-chief", None)]
    post.send("inc", "rb", Entry(kind="step.done", step="wait-for-chief"))
    assert sent[-1] == ("step.done", "wait-for-chief", None)


def test_flush_sends_what_is_held(sent):
    post = Post()
    post.send("inc", "rb", Entry(kind="step.started", step="hold"))
    post.flush()
    assert sent == [("step.started", "hold", None)]
    post.flush()
    assert len(sent) == 1


def test_flush_waits_for_a_start_the_post_is_sending(monkeypatch):
    """The process may end right after a flush: a start the post's thread was sending has reached Prefect's event
    client by then (which sends what it holds before the process ends)."""
    monkeypatch.setattr(journal, "HOLD_SECONDS", 0.05)
    sent, sending = [], threading.Event()

    def slow(incident, runbook, entry, drill=False, started=None):
        sending.set()
        time.sleep(0.5)
        sent.append(entry.kind)

    monkeypatch.setattr(journal, "emit_entry", slow)
    post = Post()
    post.send("inc", "rb", Entry(kind="step.started", step="hold"))
    assert sending.wait(5)
    post.flush()
    assert sent == ["step.started"]


def test_a_folded_event_reads_back_as_two_lines():
    began = datetime(2026, 12, 2, 4, 0, tzinfo=timezone.utc)
    lines = entries_of("step.done", began + timedelta(seconds=2), {
        "step": "call", "actor": None, "text": "status_code=200", "drill": False,
        "started": {"at": began.isoformat(), "actor": None, "text": "呼叫 / Call", "data": {"step_kind": "action"}}})
    assert [(e.kind, e.step, e.at, e.text, e.data) for e in lines] == [
        ("step.started", "call", began, "呼叫 / Call", {"step_kind": "action"}),
        ("step.done", "call", began + timedelta(seconds=2), "status_code=200", {})]


@pytest.mark.server
def test_the_journal_read_from_prefect_has_the_start_of_a_quick_step():
    incident = str(uuid4())
    post = Post()
    start = Entry(kind="step.started", step="call", text="呼叫 / Call", data={"step_kind": "action"})
    done = Entry(at=start.at + timedelta(milliseconds=30), kind="step.done", step="call", text="status_code=200")
    post.send(incident, "journal-post", start)
    post.send(incident, "journal-post", done)
    read = wait_for(lambda: (j := journal_from_events(incident)) and len(j) == 2 and j, 30, "the step's event on the server",
                    every=0.2)
    assert [(e.kind, e.step, e.at, e.text) for e in read] == [(e.kind, e.step, e.at, e.text) for e in (start, done)]
    assert read[0].data == {"step_kind": "action"}
