"""Slack channel against a local server speaking the Web API, driven through the real slack_sdk WebClient."""

from __future__ import annotations

import json
import time

from integrations.contacts import Address, Person
from integrations.notify import deliver
from integrations.notify.base import Message
from integrations.notify.dispatch import RetryPolicy
from tests.notify.fakes import Reply

TOKEN = "xoxb-1111-2222-secretsecret"


def slack_ok(seen):
    body = seen.form if seen.headers.get("content-type", "").startswith("application/x-www-form") else seen.json
    channel = body["channel"]
    return Reply(body={"ok": True, "channel": "D0DM" if channel.startswith("U") else channel, "ts": f"17000000{len(seen.body)}.0001"})


def message(**kw) -> Message:
    base = dict(incident_id="run-1", runbook_id="hospital-his-outage", title="HIS 宕机", text="门诊挂号中断，请到场。",
                severity="I", step_id="ack-head", run_url="http://ui.local/runs/run-1")
    return Message(**{**base, **kw})


def setup(monkeypatch, server):
    monkeypatch.setenv("RUNBOOK_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_SLACK_BASE_URL", server.url + "/api/")


def test_first_page_opens_thread_and_later_pages_reply_in_it(monkeypatch, fake_http):
    server = fake_http(slack_ok)
    setup(monkeypatch, server)
    person = Person(id="zhangwei", name="张伟", channels=[Address(channel="slack", to="U0ZHANG")])

    first = deliver(message(drill=True, needs_answer=True, answer_options=["approve", "reject"]), [person])
    second = deliver(message(text="第二条", step_id="restore"), [person])

    assert [d.outcome for d in first + second] == ["sent", "sent"]
    req1, req2 = server.requests
    assert req1.path == "/api/chat.postMessage"
    assert req1.headers["authorization"] == f"Bearer {TOKEN}"
    body1, body2 = req1.json, req2.json
    assert body1["channel"] == "U0ZHANG" and "thread_ts" not in body1
    assert body1["text"].startswith("[演练 DRILL] [I] HIS 宕机")
    blocks = body1["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "[演练 DRILL] [I] HIS 宕机"}}
    fields = " ".join(f["text"] for f in blocks[1]["fields"])
    assert "hospital-his-outage" in fields and "ack-head" in fields and "I" in fields
    buttons = blocks[-1]["elements"]
    answers = [json.loads(b["value"]) for b in buttons if "value" in b]
    assert answers == [{"i": "run-1", "s": "ack-head", "c": "approve"}, {"i": "run-1", "s": "ack-head", "c": "reject"}]
    assert buttons[-1]["url"] == "http://ui.local/runs/run-1"
    # The DM's conversation id from the first reply, and its ts, thread the second page.
    assert body2["channel"] == "D0DM" and body2["thread_ts"] == first[0].provider_id
    assert not any(b["type"] == "actions" and any("value" in e for e in b["elements"]) for b in body2["blocks"])


def test_rate_limit_is_waited_out(monkeypatch, fake_http):
    server = fake_http(slack_ok)
    server.queue(Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "0.3"}))
    setup(monkeypatch, server)
    person = Person(id="zhangwei", name="张伟", channels=[Address(channel="slack", to="C0OPS")])

    started = time.monotonic()
    records = deliver(message(), [person])

    assert time.monotonic() - started >= 0.3
    assert [(d.outcome, d.attempt) for d in records] == [("failed", 1), ("sent", 2)]
    assert "rate limit" in records[0].error
    assert len(server.requests) == 2


def test_permanent_error_falls_back_without_retry_and_hides_token(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"ok": False, "error": "invalid_auth"}))
    setup(monkeypatch, server)
    person = Person(id="zhangwei", name="张伟", channels=[Address(channel="slack", to="C0OPS"), Address(channel="log", to="ops")])

    records = deliver(message(), [person], policy=RetryPolicy(attempts=3, backoff_seconds=0))

    assert [(d.channel, d.outcome) for d in records] == [("slack", "failed"), ("log", "sent")]
    assert "invalid_auth" in records[0].error and TOKEN not in records[0].error
    assert len(server.requests) == 1


def test_server_error_retries_with_backoff_then_falls_back(monkeypatch, fake_http):
    server = fake_http(Reply(503, b"upstream down"))
    setup(monkeypatch, server)
    person = Person(id="zhangwei", name="张伟", channels=[Address(channel="slack", to="C0OPS"), Address(channel="log", to="ops")])
    waits = []

    records = deliver(message(), [person], policy=RetryPolicy(attempts=3, backoff_seconds=1, backoff_factor=2), sleep=waits.append)

    assert waits == [1, 2]
    assert [(d.channel, d.outcome, d.attempt) for d in records] == [
        ("slack", "failed", 1), ("slack", "failed", 2), ("slack", "failed", 3), ("log", "sent", 1)]
    assert "HTTP 503" in records[0].error


def test_unreachable_slack_is_a_failure_not_silence(monkeypatch, fake_http):
    server = fake_http()
    setup(monkeypatch, server)
    server.close()
    person = Person(id="zhangwei", name="张伟", channels=[Address(channel="slack", to="C0OPS")])

    records = deliver(message(), [person], policy=RetryPolicy(attempts=1))

    assert records[-1].outcome == "failed" and "could not reach Slack" in records[-1].error
