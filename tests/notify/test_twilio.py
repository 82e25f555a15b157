"""SMS and voice against a local server speaking Twilio's REST API, driven through the real twilio Client."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

from integrations.contacts import Address, Person
from integrations.notify import asks, deliver, links
from integrations.notify.base import Message
from integrations.notify.dispatch import RetryPolicy
from integrations.notify.sms import MAX_SEGMENTS, UCS2_CONCAT, compose, segments
from tests.notify.fakes import Reply

SID, AUTH = "AC0123456789abcdef0123456789abcdef", "twilio-auth-token-secret"
PHONE = "+8613800000001"


def twilio_ok(seen):
    kind = "SM" if seen.path.endswith("/Messages.json") else "CA"
    return Reply(201, {"sid": f"{kind}{len(seen.body):032d}", "status": "queued", "account_sid": SID})


def setup(monkeypatch, server, public_url="https://runbook.example.org"):
    monkeypatch.setenv("RUNBOOK_TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("RUNBOOK_TWILIO_AUTH_TOKEN", AUTH)
    monkeypatch.setenv("RUNBOOK_TWILIO_FROM", "+15005550006")
    monkeypatch.setenv("RUNBOOK_TWILIO_BASE_URL", server.url)
    monkeypatch.setenv("RUNBOOK_TWILIO_TIMEOUT", "0.5")
    if public_url:
        monkeypatch.setenv("RUNBOOK_PUBLIC_URL", public_url)


def message(**kw) -> Message:
    base = dict(incident_id="run-7", runbook_id="hospital-his-outage", title="HIS 宕机 门诊挂号中断",
                text="请信息科立即到机房，按预案切换到备用系统。" * 20, severity="I", step_id="ack-head",
                needs_answer=True, answer_options=["ack"], run_url="http://ui.local/runs/run-7")
    return Message(**{**base, **kw})


def sms_person(*extra: Address) -> Person:
    return Person(id="zhangwei", name="张伟", channels=[Address(channel="sms", to=PHONE), *extra])


def test_sms_is_sent_shortened_and_remembered_for_replies(monkeypatch, fake_http):
    server = fake_http(twilio_ok)
    setup(monkeypatch, server)
    monkeypatch.setenv("RUNBOOK_LINK_SECRET", "link-secret")

    records = deliver(message(drill=True), [sms_person()])

    assert records[0].outcome == "sent" and records[0].provider_id.startswith("SM")
    (req,) = server.requests
    assert req.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert req.headers["authorization"].startswith("Basic ")
    form = req.form
    assert form["To"] == PHONE and form["From"] == "+15005550006"
    body = form["Body"]
    assert body.startswith("[演练 DRILL] [I] HIS 宕机")
    assert segments(body) <= MAX_SEGMENTS and len(body) <= MAX_SEGMENTS * UCS2_CONCAT
    assert "…" in body  # the body was shortened; the reply hint and link were kept
    code = asks.code_for("run-7", "ack-head")
    assert f"回复 1 确认收到 [{code}]" in body
    assert body.rsplit("\n", 1)[1].startswith("https://runbook.example.org/notify/link/")
    assert [a["code"] for a in asks.pending(PHONE)] == [code]


def test_short_sms_carries_a_personal_signed_link(monkeypatch, fake_http):
    server = fake_http(twilio_ok)
    setup(monkeypatch, server)
    monkeypatch.setenv("RUNBOOK_LINK_SECRET", "link-secret")

    deliver(message(text="请到场。"), [sms_person()])

    link = server.requests[0].form["Body"].rsplit("\n", 1)[1]  # the personal link replaces the run link
    assert link.startswith("https://runbook.example.org/notify/link/")
    claims = links.verify(link.rsplit("/", 1)[1])
    assert (claims.incident_id, claims.step_id, claims.person, claims.options) == ("run-7", "ack-head", "zhangwei", ["ack"])


def test_segment_arithmetic():
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2 and segments("a" * 306) == 2
    assert segments("中" * 70) == 1 and segments("中" * 71) == 2 and segments("中" * 134) == 2
    assert segments("{" * 80) == 1 and segments("{" * 81) == 2  # extension characters count twice
    short = message(text="请到场。", needs_answer=False, run_url=None)
    assert compose(short) == "[I] HIS 宕机 门诊挂号中断\n请到场。"


def test_sms_rate_limit_is_waited_out(monkeypatch, fake_http):
    server = fake_http(twilio_ok)
    server.queue(Reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "0.2"}))
    setup(monkeypatch, server)

    started = time.monotonic()
    records = deliver(message(), [sms_person()])

    assert time.monotonic() - started >= 0.2
    assert [(d.outcome, d.attempt) for d in records] == [("failed", 1), ("sent", 2)]
    assert "HTTP 429" in records[0].error and AUTH not in records[0].error


def test_sms_server_error_falls_back_to_a_voice_call(monkeypatch, fake_http):
    def reply(seen):
        return Reply(500, {"code": 20500, "message": "Internal Server Error"}) if seen.path.endswith("/Messages.json") else twilio_ok(seen)

    server = fake_http(reply)
    setup(monkeypatch, server)
    person = sms_person(Address(channel="voice", to=PHONE))

    records = deliver(message(drill=True), [person], policy=RetryPolicy(attempts=2, backoff_seconds=0))

    assert [(d.channel, d.outcome, d.attempt) for d in records] == [
        ("sms", "failed", 1), ("sms", "failed", 2), ("voice", "sent", 1)]
    call = server.requests[-1]
    assert call.path == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert call.form["To"] == PHONE
    twiml = ET.fromstring(call.form["Twiml"])
    gather = twiml.find("Gather")
    assert gather.get("numDigits") == "1"
    action = urlsplit(gather.get("action"))
    assert (action.scheme, action.netloc, action.path) == ("https", "runbook.example.org", "/notify/twilio/voice")
    assert parse_qs(action.query) == {"incident": ["run-7"], "step": ["ack-head"], "options": ["ack"], "lang": ["zh"]}
    says = gather.findall("Say")
    assert says[0].get("language") == "zh-CN" and says[0].text.startswith("这是一次演练。HIS 宕机")
    assert says[1].text == "请按 1 键确认收到。"


def test_voice_in_english_without_public_url_just_reads_out(monkeypatch, fake_http):
    server = fake_http(twilio_ok)
    setup(monkeypatch, server, public_url=None)
    person = Person(id="p", name="P", channels=[Address(channel="voice", to=PHONE)])

    deliver(message(language="en", title="HIS down", text="Come to the server room."), [person])

    twiml = ET.fromstring(server.requests[0].form["Twiml"])
    assert twiml.find("Gather") is None
    assert twiml.find("Say").get("language") == "en-US"
    assert twiml.find("Say").text == "HIS down. Severity I. Come to the server room."


def test_timeout_falls_back_to_next_channel(monkeypatch, fake_http):
    server = fake_http(Reply(201, {"sid": "SMx"}, delay=1.5))
    setup(monkeypatch, server)
    person = sms_person(Address(channel="log", to="duty"))

    records = deliver(message(), [person], policy=RetryPolicy(attempts=1))

    assert [(d.channel, d.outcome) for d in records] == [("sms", "failed"), ("log", "sent")]
    assert re.search(r"Twilio did not answer|could not reach Twilio", records[0].error)


def test_bad_number_is_permanent(monkeypatch, fake_http):
    server = fake_http(Reply(400, {"code": 21211, "message": "The 'To' number +86 is not a valid phone number.", "status": 400}))
    setup(monkeypatch, server)

    records = deliver(message(), [sms_person()], policy=RetryPolicy(attempts=3))

    assert len(records) == 1 and "21211" in records[0].error
    assert not asks.pending(PHONE)  # nothing was sent, so no reply can answer it


def test_missing_configuration_is_reported(monkeypatch):
    records = deliver(message(), [sms_person()])
    assert records[0].outcome == "failed" and "RUNBOOK_TWILIO_ACCOUNT_SID" in records[0].error
