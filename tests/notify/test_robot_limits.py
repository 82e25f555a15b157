"""Robots' messages-per-minute, held across processes against fakes that enforce them as the platforms do.

The windows are made short by RUNBOOK_NOTIFY_RATE_TIME_SCALE (30: DingTalk's 20 a minute is 20 in 2 s).
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from integrations.contacts import Address, Person
from integrations.notify import deliver, ratelimit
from integrations.notify.base import Message
from integrations.notify.ratelimit import RateLimit, RobotLine, next_slot
from tests.notify.fakes import LimitedRobot, Reply

DING_TOKEN = "dinglimitstoken0123456789"
WECOM_KEY = "wecom-limits-key-0123"
FEISHU_HOOK = "feishu-limits-hook-0123"


def page(label: str) -> Message:
    return Message(incident_id=f"run-{label}", runbook_id="pump-station-power-loss", title="泵站停电", text=f"page {label}")


def robot(channel: str) -> Person:
    return Person(id="ops", name="Ops group", channels=[Address(channel=channel, to="default")])


def label_of(seen) -> str:
    body = seen.json
    text = body.get("markdown", {}).get("text") or body.get("markdown", {}).get("content") or json.dumps(body, ensure_ascii=False)
    return text.rsplit("page ", 1)[1].split()[0].rstrip('"}]')


def test_next_slot_keeps_every_window_with_a_margin():
    limits = [RateLimit(3, 10), RateLimit(2, 1)]
    assert next_slot([], limits, 100) == 100
    assert next_slot([100], limits, 100) == 100
    assert next_slot([100, 100], limits, 100) == 100 + 1 + 0.25            # two a second: wait out the 1-s window
    assert next_slot([100, 101.3, 102.6], limits, 103) == 100 + 10 + 0.5   # three in ten seconds: wait for the first to leave
    assert next_slot([100, 105], limits, 101) == 105                       # never before the last send: order is kept


def _send_pages(labels: list[str], start: float, gap: float, first: int, results, ready, go) -> None:
    """One flow-run process: a thread per page, page i starting at start + i * gap (wall clock, shared)."""
    from integrations.notify import deliver as deliver_in_child

    out = {}

    def one(i: int, label: str) -> None:
        # First-time costs (settings, this thread's database connection) paid before the clock starts.
        from integrations.notify.dingtalk import DingTalkChannel

        DingTalkChannel()
        RobotLine(ratelimit.robot_key("dingtalk", "warm-up"), []).leave()
        warm.release()
        go.wait()
        time.sleep(max(0.0, start.value + (first + 2 * i) * gap - time.time()))
        asked_at = time.time()
        out[label] = (asked_at, [d.model_dump(mode="json") for d in deliver_in_child(page(label), [robot("dingtalk")])])

    warm = threading.Semaphore(0)
    threads = [threading.Thread(target=one, args=(i, label)) for i, label in enumerate(labels)]
    for t in threads:
        t.start()
    for _ in threads:
        warm.acquire()
    ready.put(first)
    for t in threads:
        t.join()
    results.put(out)


def test_thirty_pages_from_two_processes_wait_their_turn_in_order(monkeypatch, fake_http):
    server = LimitedRobot([(20, 2.0)], Reply(200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}))
    try:
        monkeypatch.setenv("RUNBOOK_DINGTALK_WEBHOOK", f"{server.url}/robot/send?access_token={DING_TOKEN}")
        monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_TIME_SCALE", "30")
        spawn = multiprocessing.get_context("spawn")
        results, ready, go, start = spawn.Queue(), spawn.Queue(), spawn.Event(), spawn.Value("d", 0.0)
        gap = 0.06  # page i starts at i * 60 ms, alternately in each process: 20 fit the first window, 10 must wait
        labels = {0: [f"{i:02d}" for i in range(0, 30, 2)], 1: [f"{i:02d}" for i in range(1, 30, 2)]}
        procs = [spawn.Process(target=_send_pages, args=(labels[n], start, gap, n, results, ready, go)) for n in (0, 1)]
        for p in procs:
            p.start()
        ready.get(timeout=60), ready.get(timeout=60)
        start.value = time.time() + 0.3
        go.set()
        outcome = {**results.get(timeout=60), **results.get(timeout=60)}
        for p in procs:
            p.join(timeout=10)
    finally:
        server.close()

    asked_at = {label: at for label, (at, _) in outcome.items()}
    deliveries = {label: records for label, (_, records) in outcome.items()}
    # None dropped: every page sent on its first attempt, and the robot never had to refuse one.
    assert sorted(deliveries) == [f"{i:02d}" for i in range(30)]
    assert all([(d["outcome"], d["attempt"]) for d in records] == [("sent", 1)] for records in deliveries.values())
    assert server.refused == [] and server.peak[(20, 2.0)] <= 20
    # In order: the robot got them in the order they were asked for, across both processes. (Pages asked for
    # within a few ms of each other join the line in whichever order their threads get there: a loaded machine
    # can wake a thread late, and SQLite does not queue writers fairly, so only pages asked for 0.3 s apart or more
    # are compared.)
    arrived = [label_of(seen) for _, seen in server.posted]
    inversions = [(a, b) for i, a in enumerate(arrived) for b in arrived[i + 1:] if asked_at[b] + 0.3 < asked_at[a]]
    assert sorted(arrived) == [f"{i:02d}" for i in range(30)] and inversions == [], arrived
    # The first twenty went at once (held at most behind the post before them, longer on a loaded machine); the
    # later ten were held a window out, and each says for how long (page 20 is asked for at 1.2 s, may not go
    # before 2.25 s).
    held = {label: records[0]["queued_seconds"] for label, records in deliveries.items()}
    first, later = sorted(held[f"{i:02d}"] for i in range(20)), sorted(held[f"{i:02d}"] for i in range(20, 30))
    assert first[10] < later[5], held
    assert all(held[f"{i:02d}"] > 0.3 for i in range(20, 30)), held
    times = [t for t, _ in server.posted]
    assert times[20] - times[0] >= 2.0  # the 21st waited for the first to leave the window


def test_feishu_per_second_and_per_minute_limits_hold_for_threads(monkeypatch, fake_http):
    server = LimitedRobot([(5, 0.25), (100, 15.0)], Reply(200, {"code": 11232, "msg": "frequency limited"}),
                          ok=Reply(200, {"code": 0, "msg": "success"}))
    try:
        monkeypatch.setenv("RUNBOOK_FEISHU_WEBHOOK", f"{server.url}/open-apis/bot/v2/hook/{FEISHU_HOOK}")
        monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_TIME_SCALE", "4")  # 5 in 0.25 s, 100 in 15 s
        out: dict[str, list] = {}

        def sender(n: int) -> None:
            for k in range(5):
                label = f"{n}-{k}"
                out[label] = deliver(page(label), [robot("feishu")])

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.close()

    # every page went; a retry after a post that failed for another reason (a loaded machine's timeout) is
    # not what this test is about, the robot never saying "too fast" is
    assert len(out) == 20 and all(records[-1].outcome == "sent" for records in out.values()), \
        {label: [(d.outcome, d.error) for d in records] for label, records in out.items() if len(records) > 1}
    assert server.refused == [] and server.peak[(5, 0.25)] <= 5
    arrived = [label_of(seen) for _, seen in server.posted]
    for n in range(4):  # each sender's pages in its own order
        assert [x for x in arrived if x.startswith(f"{n}-")] == [f"{n}-{k}" for k in range(5)]
    assert max(records[0].queued_seconds for records in out.values()) > 0.25  # some waited a window out


def test_wecom_freq_limit_from_elsewhere_is_waited_out_and_order_kept(monkeypatch, fake_http, caplog):
    # Another system shares the robot, so it refuses although we kept our count: 45009 until it lets go.
    server = fake_http(Reply(200, {"errcode": 0, "errmsg": "ok"}))
    server.queue(Reply(200, {"errcode": 45009, "errmsg": "api freq out of limit"}))
    monkeypatch.setenv("RUNBOOK_WECOM_WEBHOOK", f"{server.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
    monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_TIME_SCALE", "100")  # WeCom's "wait a minute" is 0.6 s
    monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_LONG_WAIT_SECONDS", "0.3")
    out = {}

    def send(label: str) -> None:
        out[label] = deliver(page(label), [robot("wecom")])

    with caplog.at_level("WARNING", logger="runbook.notify"):
        first = threading.Thread(target=send, args=("first",))
        first.start()
        while not server.requests:  # the second page is asked for once the first has been refused
            time.sleep(0.005)
        second = threading.Thread(target=send, args=("second",))
        second.start()
        first.join(timeout=30), second.join(timeout=30)

    # The refused first page went again before the second, which waited behind it although the window had room.
    assert [label_of(r) for r in server.requests] == ["first", "first", "second"]
    assert [(d.outcome, d.attempt) for d in out["first"]] == [("sent", 1)] and out["first"][0].queued_seconds >= 0.6
    assert out["second"][0].outcome == "sent" and out["second"][0].queued_seconds >= 0.4
    assert "waits" in caplog.text and WECOM_KEY not in caplog.text


def test_a_robot_that_keeps_refusing_is_a_recorded_failure_not_a_hang(monkeypatch, fake_http):
    server = fake_http(Reply(429, {"code": 9499, "msg": "too many requests"}, {"Retry-After": "0.05"}))
    monkeypatch.setenv("RUNBOOK_FEISHU_WEBHOOK", f"{server.url}/open-apis/bot/v2/hook/{FEISHU_HOOK}")
    monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_TIME_SCALE", "10")
    person = Person(id="ops", name="Ops", channels=[Address(channel="feishu", to="default"), Address(channel="log", to="ops")])

    records = deliver(page("x"), [person], sleep=lambda s: None)

    # Each try waits out three "too fast" answers in place; then the dispatcher's retries, then the next channel.
    assert [d.channel for d in records if d.outcome == "sent"] == ["log"]
    assert all("HTTP 429" in d.error for d in records if d.channel == "feishu")
    assert len(server.requests) == 3 * 4


def test_a_ticket_left_by_a_dead_process_stops_blocking_the_line(monkeypatch, tmp_path):
    monkeypatch.setattr(ratelimit, "STALE_SECONDS", 0.3)
    key = ratelimit.robot_key("dingtalk", "http://robot/1")
    first = RobotLine(key, [RateLimit(20, 60)])
    first._db.execute("INSERT INTO line (robot, seen) VALUES (?, ?)", (key, time.time()))  # a process died waiting
    started = time.monotonic()
    line = RobotLine(key, [RateLimit(20, 60)])

    line.wait_turn()
    line.leave()
    first.leave()

    assert 0.3 <= time.monotonic() - started < 5
    db = sqlite3.connect(Path(tmp_path / "var" / "notify" / "robot-sends.sqlite"))
    assert db.execute("SELECT COUNT(*) FROM line").fetchone()[0] == 0


def test_a_robot_that_is_down_uses_none_of_its_quota(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("RUNBOOK_DINGTALK_WEBHOOK", f"http://127.0.0.1:{free_port()}/robot/send?access_token={DING_TOKEN}")
    person = Person(id="ops", name="Ops", channels=[Address(channel="dingtalk", to="default"), Address(channel="log", to="ops")])
    started = time.monotonic()

    for n in range(8):  # 24 refused connections: more than 20 a minute, had they counted
        records = deliver(page(str(n)), [person], sleep=lambda s: None)
        assert [d.outcome for d in records] == ["failed"] * 3 + ["sent"] and records[-1].channel == "log"

    assert time.monotonic() - started < 10 and all(d.queued_seconds < 1 for d in records)
