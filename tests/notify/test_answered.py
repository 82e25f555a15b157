"""Once a step is answered, the Slack messages that asked say who answered, when and what, without buttons.

The real slack_sdk client talks to a local server that keeps messages and implements chat.update,
so the tests see the messages as a responder in Slack would.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from app import inbound
from app.inbound import SLACK_PATH, SMS_PATH, router, slack_signature
from integrations.contacts import Address, Person
from integrations.notify import answered, asks, deliver
from integrations.notify.base import Message
from tests.notify.fakes import FakeSlack, Reply

TOKEN = "xoxb-1111-2222-answeredsecret"
ZHANG = Person(id="zhangwei", name="张伟 Zhang Wei", channels=[Address(channel="slack", to="U0ZHANG")])
OPS = Person(id="ops", name="Ops room", channels=[Address(channel="slack", to="C0OPS")])
AT = datetime(2024, 5, 1, 6, 3, tzinfo=timezone.utc)


@pytest.fixture
def slack(monkeypatch):
    server = FakeSlack()
    monkeypatch.setenv("RUNBOOK_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_SLACK_BASE_URL", server.url + "/api/")
    monkeypatch.setenv("RUNBOOK_SLACK_SIGNING_SECRET", "signing")
    yield server
    server.close()


def ask(step="approve-switch", **kw) -> Message:
    base = dict(incident_id="run-1", runbook_id="hospital-his-outage", title="HIS 宕机", text="是否切换到备用系统？",
                severity="I", step_id=step, run_url="http://ui.local/runs/run-1", needs_answer=True,
                answer_options=["approve", "reject"])
    return Message(**{**base, **kw})


def answer_buttons(stored: dict) -> list[dict]:
    return [e for b in stored["blocks"] if b["type"] == "actions" for e in b["elements"]
            if e.get("action_id", "").startswith("runbook_answer_")]


def text_of(stored: dict) -> str:
    return json.dumps(stored["blocks"], ensure_ascii=False) + stored["text"]


def test_every_message_that_asked_shows_the_answer_and_loses_its_buttons(slack):
    first = deliver(ask(), [ZHANG, OPS])
    again = deliver(ask(text="升级：仍未答复"), [ZHANG])            # the escalation asks once more, in the thread
    other = deliver(ask(step="notify-press", answer_options=["ack"]), [ZHANG])
    news = deliver(ask(step=None, needs_answer=False, answer_options=[], text="进展"), [OPS])
    asking = {(d.to, d.provider_id) for d in first + again}
    assert len(slack.messages) == 5 and all(answer_buttons(slack.messages[k]) for k in slack.messages
                                            if k[1] != news[0].provider_id)

    updates = answered("run-1", "approve-switch", "zhangwei", "approve", AT)

    assert [u.outcome for u in updates] == ["updated"] * 3
    updated = [slack.body_of(r) for r in slack.calls("chat.update")]
    assert {(u["channel"], u["ts"]) for u in updated} == {("D0ZHANG", first[0].provider_id), ("C0OPS", first[1].provider_id),
                                                          ("D0ZHANG", again[0].provider_id)}
    assert {u["ts"] for u in updated} == {ts for _, ts in asking}
    for key, stored in slack.messages.items():
        if key[1] in {ts for _, ts in asking}:
            assert stored["updates"] == 1 and answer_buttons(stored) == []
            shown = text_of(stored)
            assert "张伟 Zhang Wei" in shown and "批准" in shown  # who and what, in the page's language
            assert f"<!date^{int(AT.timestamp())}^" in shown and "2024-05-01 06:03 UTC" in shown  # when
            assert "是否切换到备用系统" in shown or "升级" in shown  # the question itself stays readable
            assert any(e.get("url") == "http://ui.local/runs/run-1" for b in stored["blocks"] if b["type"] == "actions"
                       for e in b["elements"])  # the link to the run stays
        else:
            assert stored["updates"] == 0  # another step's question, and news that asked nothing
    assert answer_buttons(slack.messages[("D0ZHANG", other[0].provider_id)])

    # Said twice (the web app, then the engine when the run resumes): each message is updated once.
    assert answered("run-1", "approve-switch", "zhangwei", "approve", AT) == []
    assert len(slack.calls("chat.update")) == 3


def test_english_page_and_free_text_summary(slack):
    deliver(ask(language="en", step="confirm", answer_options=["answer"]), [OPS])  # a form: no buttons, still asks

    (update,) = answered("run-1", "confirm", "li-na", "scope=outside", AT)

    stored = next(iter(slack.messages.values()))
    assert update.outcome == "updated"
    assert "Answered by *li-na* at <!date^" in text_of(stored) and ": scope=outside" in text_of(stored)


def test_a_refused_update_is_retried_later_and_a_rate_limit_is_waited_out(slack):
    deliver(ask(), [OPS])
    slack.queue(Reply(503, b"down"), Reply(503, b"down"), Reply(503, b"down"))
    waits = []

    (failed,) = answered("run-1", "approve-switch", "zhangwei", "approve", AT, sleep=waits.append)

    assert failed.outcome == "failed" and "HTTP 503" in failed.error and failed.attempts == 3 and len(waits) == 2
    slack.queue(Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}))
    (done,) = answered("run-1", "approve-switch", "zhangwei", "approve", AT, sleep=waits.append)
    assert done.outcome == "updated" and done.attempts == 2 and waits[-1] == 1
    assert TOKEN not in failed.error


def test_a_deleted_message_is_given_up_and_reported(slack):
    deliver(ask(), [OPS])
    slack.messages.clear()  # someone deleted it in Slack

    (update,) = answered("run-1", "approve-switch", "zhangwei", "ack", AT)

    assert update.outcome == "failed" and "message_not_found" in update.error
    assert answered("run-1", "approve-switch", "zhangwei", "ack", AT) == []  # permanent: not tried again


def test_answered_also_stops_sms_replies_going_to_the_step(slack):
    asks.remember("+8613800000001", "run-1", "approve-switch", ["approve", "reject"], "zh")
    answered("run-1", "approve-switch", "zhangwei", "approve")
    assert asks.pending("+8613800000001") == []


# --- answers arriving through the web app ---

class Result:
    def __init__(self, ok: bool, message: str, step: str | None = None):
        self.ok, self.message, self.step = ok, message, step


@pytest.fixture
def app(monkeypatch, slack):
    calls = []

    def answer_step(flow_run_id, by, values, step=None, via=None):
        calls.append(by)
        return Result(by == "zhangwei", "ok" if by == "zhangwei" else f"{by} may not answer", step)

    monkeypatch.setattr(inbound, "answer_step", answer_step)
    monkeypatch.setattr(inbound, "waiting_run", lambda incident_id, step_id: incident_id)
    monkeypatch.setenv("RUNBOOK_TWILIO_AUTH_TOKEN", "twilio-auth")
    monkeypatch.setenv("RUNBOOK_PUBLIC_URL", "https://runbook.example.org")
    web = FastAPI()
    web.include_router(router)
    return TestClient(web), calls


def click(client, user: str, choice: str, step="approve-switch"):
    payload = {"type": "block_actions", "user": {"id": user},
               "actions": [{"action_id": f"runbook_answer_{choice}", "value": json.dumps({"i": "run-1", "s": step, "c": choice})}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    return client.post(SLACK_PATH, content=body, headers={
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": slack_signature("signing", ts, body),
        "Content-Type": "application/x-www-form-urlencoded"})


def test_a_slack_click_updates_the_message_it_came_from(slack, app):
    client, _ = app
    (page,) = deliver(ask(), [ZHANG])

    assert click(client, "U0ZHANG", "reject").json()["ok"] is True

    stored = slack.messages[("D0ZHANG", page.provider_id)]
    assert answer_buttons(stored) == [] and "驳回" in text_of(stored) and "张伟 Zhang Wei" in text_of(stored)


def test_a_refused_click_leaves_the_buttons(slack, app):
    client, calls = app
    (page,) = deliver(ask(), [OPS])

    assert click(client, "U0STRANGER", "approve").json()["ok"] is False
    assert slack.calls("chat.update") == [] and answer_buttons(slack.messages[("C0OPS", page.provider_id)])


def test_an_sms_answer_updates_the_slack_message_too(slack, app):
    client, _ = app
    (page,) = deliver(ask(), [OPS])
    asks.remember("+8613800000001", "run-1", "approve-switch", ["approve", "reject"], "zh")
    params = {"From": "+8613800000001", "Body": "1"}
    signature = RequestValidator("twilio-auth").compute_signature("https://runbook.example.org" + SMS_PATH, params)

    resp = client.post(SMS_PATH, content=urlencode(params).encode(),
                       headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})

    assert "✅" in resp.text
    stored = slack.messages[("C0OPS", page.provider_id)]
    assert answer_buttons(stored) == [] and "批准" in text_of(stored)


def test_answered_never_fails_the_answer_it_follows(monkeypatch, tmp_path, caplog):
    from runbooks.settings import get_settings

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(blocked))
    get_settings.cache_clear()

    assert answered("run-1", "approve-switch", "zhangwei", "approve") == []
    assert "could not show the answer to run-1/approve-switch" in caplog.text
