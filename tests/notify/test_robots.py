"""DingTalk, WeCom, Feishu and the generic webhook against local servers that check signatures as the platforms do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from integrations.contacts import Address, Person
from integrations.notify import deliver
from integrations.notify.base import Message
from integrations.notify.dispatch import RetryPolicy
from integrations.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.notify.fakes import Reply

DING_TOKEN, DING_SECRET = "dingaccesstoken0123456789abcdef", "SECdingsecret0123456789"
FEISHU_HOOK, FEISHU_SECRET = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "feishusecret0123"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


def message(**kw) -> Message:
    base = dict(incident_id="run-9", runbook_id="hospital-his-outage", title="HIS 宕机", text="门诊挂号中断。",
                severity="II", step_id="notify-all", run_url="http://ui.local/runs/run-9", drill=True)
    return Message(**{**base, **kw})


def robot_person(channel: str, *extra: Address) -> Person:
    return Person(id="ops", name="Ops group", channels=[Address(channel=channel, to="ops"), *extra])


def test_dingtalk_signs_timestamp_and_posts_markdown(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"errcode": 0, "errmsg": "ok"}))
    monkeypatch.setenv("RUNBOOK_DINGTALK_ROBOTS", json.dumps(
        {"ops": {"webhook": f"{server.url}/robot/send?access_token={DING_TOKEN}", "secret": DING_SECRET}}))

    records = deliver(message(), [robot_person("dingtalk")])

    assert records[0].outcome == "sent"
    (req,) = server.requests
    assert req.path == "/robot/send" and req.query["access_token"] == DING_TOKEN
    ts = req.query["timestamp"]
    assert abs(int(ts) / 1000 - time.time()) < 60
    expected = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()).decode()
    assert req.query["sign"] == expected  # parse_qs already url-decoded it once
    body = req.json
    assert body["msgtype"] == "markdown" and body["markdown"]["title"] == "[演练 DRILL] [II] HIS 宕机"
    assert "门诊挂号中断" in body["markdown"]["text"] and "(http://ui.local/runs/run-9)" in body["markdown"]["text"]


def test_dingtalk_throttle_is_waited_out_in_place_and_never_leaks_the_token(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"errcode": 0, "errmsg": "ok"}))
    server.queue(Reply(200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}))
    monkeypatch.setenv("RUNBOOK_DINGTALK_WEBHOOK", f"{server.url}/robot/send?access_token={DING_TOKEN}")
    monkeypatch.setenv("RUNBOOK_NOTIFY_RATE_TIME_SCALE", "1500")  # DingTalk's 10-minute throttle becomes 0.4 s
    person = Person(id="ops", name="Ops", channels=[Address(channel="dingtalk", to="default"), Address(channel="log", to="ops")])
    waits = []

    records = deliver(message(), [person], policy=RetryPolicy(max_wait_seconds=30), sleep=waits.append)

    # Not dropped, not handed to the next channel: held as long as the robot asked, then sent; the hold is on record.
    assert waits == [] and [(d.channel, d.outcome, d.attempt) for d in records] == [("dingtalk", "sent", 1)]
    assert records[0].queued_seconds >= 0.4
    first, second = server.requests
    assert second.json == first.json
    assert all(DING_TOKEN not in (d.error or "") for d in records)


def test_webhook_credentials_are_masked_in_errors(monkeypatch, fake_http, caplog):
    server = fake_http(Reply(502, b"bad gateway"))
    monkeypatch.setenv("RUNBOOK_WECOM_WEBHOOK", f"{server.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
    monkeypatch.setenv("RUNBOOK_FEISHU_WEBHOOK", f"{server.url}/open-apis/bot/v2/hook/{FEISHU_HOOK}")
    person = Person(id="ops", name="Ops", channels=[Address(channel="wecom", to="default"), Address(channel="feishu", to="default")])

    with caplog.at_level("DEBUG"):
        records = deliver(message(), [person], policy=RetryPolicy(attempts=1))

    assert [d.outcome for d in records] == ["failed", "failed"]
    assert "HTTP 502" in records[0].error and "key=***" in records[0].error
    assert "/hook/***" in records[1].error
    for text in [d.error for d in records] + [caplog.text]:
        assert WECOM_KEY not in text and FEISHU_HOOK not in text


def test_wecom_posts_markdown_within_its_limit(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"errcode": 0, "errmsg": "ok"}))
    monkeypatch.setenv("RUNBOOK_WECOM_WEBHOOK", f"{server.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
    person = Person(id="ops", name="Ops", channels=[Address(channel="wecom", to="default")])

    deliver(message(text="很长的说明。" * 2000), [person])

    req = server.requests[0]
    assert req.query == {"key": WECOM_KEY}
    content = req.json["markdown"]["content"]
    assert req.json["msgtype"] == "markdown" and len(content.encode()) <= 4096
    assert content.startswith("### [演练 DRILL] [II] HIS 宕机") and content.rstrip().endswith("(http://ui.local/runs/run-9)")


def test_feishu_signature_and_rate_limit(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"code": 0, "msg": "success"}))
    server.queue(Reply(200, {"code": 11232, "msg": "frequency limited"}))
    monkeypatch.setenv("RUNBOOK_FEISHU_WEBHOOK", f"{server.url}/open-apis/bot/v2/hook/{FEISHU_HOOK}")
    monkeypatch.setenv("RUNBOOK_FEISHU_SECRET", FEISHU_SECRET)
    person = Person(id="ops", name="Ops", channels=[Address(channel="feishu", to="default")])
    waits = []

    records = deliver(message(language="en"), [person], sleep=waits.append)

    # "frequency limited": the bot is held for the second Feishu asks, then the same page goes, first in line.
    assert [(d.outcome, d.attempt) for d in records] == [("sent", 1)] and waits == []
    # held from the moment the robot said so; the wait's own clock starts a few ms after that (0.997 s seen in CI)
    assert records[0].queued_seconds >= 0.95 and len(server.requests) == 2
    body = server.requests[-1].json
    ts = body["timestamp"]
    expected = base64.b64encode(hmac.new(f"{ts}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected
    post = body["content"]["post"]["en_us"]
    assert body["msg_type"] == "post" and post["title"] == "[演练 DRILL] [II] HIS 宕机"
    assert {"tag": "a", "text": "Open the run", "href": "http://ui.local/runs/run-9"} in [line[0] for line in post["content"]]


def test_unknown_robot_name_is_a_clear_permanent_failure(monkeypatch):
    records = deliver(message(), [robot_person("wecom")])
    assert len(records) == 1 and "no wecom robot named 'ops'" in records[0].error


def test_generic_webhook_signs_the_body(monkeypatch, fake_http):
    server = fake_http(Reply(200, {"id": "T-42"}))
    monkeypatch.setenv("RUNBOOK_WEBHOOK_TOKEN", "bearer-token-123")
    monkeypatch.setenv("RUNBOOK_WEBHOOK_SECRET", "body-signing-key")
    person = Person(id="tickets", name="Tickets", channels=[Address(channel="webhook", to=server.url + "/hook")])

    records = deliver(message(), [person])

    assert records[0].outcome == "sent" and records[0].provider_id == "T-42"
    req = server.requests[0]
    assert req.headers["authorization"] == "Bearer bearer-token-123"
    ts = req.headers[TIMESTAMP_HEADER.lower()]
    assert req.headers[SIGNATURE_HEADER.lower()] == signature("body-signing-key", ts, req.body)
    assert req.json["incident_id"] == "run-9" and req.json["headline"] == "[演练 DRILL] [II] HIS 宕机"
    assert req.json["text"] == "门诊挂号中断。"
