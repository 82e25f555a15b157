"""Answer endpoints: signatures are checked, responders are mapped to people, answers reach answer_step."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from integrations.notify import asks, links
from app import inbound
from app.inbound import SLACK_PATH, SMS_PATH, router, slack_signature
from integrations.notify.voice import VOICE_PATH

SIGNING, AUTH, PUBLIC = "slack-signing-secret", "twilio-auth-token", "https://runbook.example.org"


class Result:
    def __init__(self, ok: bool, message: str):
        self.ok, self.message = ok, message


@pytest.fixture
def answers(monkeypatch):
    """flows.answers stand-in: records calls; refuses anyone but zhangwei, as a step's answerers would."""
    calls = []

    def answer_step(flow_run_id, by, values, step=None, via=None):
        calls.append({"flow_run_id": flow_run_id, "by": by, "values": values, "step": step})
        return Result(True, f"answered by {by}") if by == "zhangwei" else Result(False, f"{by} may not answer {step}")

    monkeypatch.setattr(inbound, "answer_step", answer_step)
    monkeypatch.setattr(inbound, "waiting_run", lambda incident_id, step_id: incident_id)
    return calls


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("RUNBOOK_SLACK_SIGNING_SECRET", SIGNING)
    monkeypatch.setenv("RUNBOOK_TWILIO_AUTH_TOKEN", AUTH)
    monkeypatch.setenv("RUNBOOK_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("RUNBOOK_LINK_SECRET", "link-secret")
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


# --- Slack ---

def slack_post(client, payload: dict, *, secret=SIGNING, ts=None):
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) if ts is None else ts)
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": slack_signature(secret, ts, body),
               "Content-Type": "application/x-www-form-urlencoded"}
    return client.post(SLACK_PATH, content=body, headers=headers)


def button(user: str, choice: str = "approve") -> dict:
    return {"type": "block_actions", "user": {"id": user},
            "actions": [{"action_id": f"runbook_answer_{choice}", "value": json.dumps({"i": "run-1", "s": "approve-switch", "c": choice})}]}


def test_slack_button_answers_as_the_mapped_person(client, answers):
    resp = slack_post(client, button("U0ZHANG", "approve"))
    assert resp.status_code == 200 and resp.json()["ok"] is True
    assert answers == [{"flow_run_id": "run-1", "by": "zhangwei", "values": {"decision": "approve"}, "step": "approve-switch"}]

    slack_post(client, button("U0ZHANG", "ack"))
    assert answers[-1]["values"] == {"acknowledged": True}


def test_slack_bad_or_stale_signature_is_refused(client, answers):
    assert slack_post(client, button("U0ZHANG"), secret="wrong").status_code == 403
    assert slack_post(client, button("U0ZHANG"), ts=int(time.time()) - 3600).status_code == 403
    assert client.post(SLACK_PATH, content=b"payload=%7B%7D").status_code == 403
    assert answers == []


def test_slack_unknown_user_is_refused_clearly(client, answers):
    resp = slack_post(client, button("U0STRANGER"))
    assert resp.status_code == 200 and resp.json()["ok"] is False
    assert "U0STRANGER is not in the contacts directory" in resp.json()["message"]
    assert answers == []


def test_slack_tells_the_responder_through_response_url(client, answers, fake_http):
    hook = fake_http()
    payload = {**button("U0ZHANG"), "response_url": hook.url + "/actions/T1/B2"}
    slack_post(client, payload)
    assert hook.requests[0].json == {"response_type": "ephemeral", "replace_original": False, "text": "✅ answered by zhangwei"}


# --- Twilio ---

def twilio_post(client, path: str, params: dict, *, token=AUTH):
    url = PUBLIC + path
    signature = RequestValidator(token).compute_signature(url, params)
    return client.post(path, content=urlencode(params).encode(),
                       headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


PHONE = "+8613800000001"


def test_sms_reply_answers_the_latest_question_or_the_quoted_one(client, answers):
    older = asks.remember(PHONE, "run-1", "approve-switch", ["approve", "reject"], "zh")
    asks.remember(PHONE, "run-2", "ack-head", ["ack"], "zh")

    resp = twilio_post(client, SMS_PATH, {"From": PHONE, "To": "+15005550006", "Body": "1"})
    assert resp.status_code == 200 and "<Message>✅ answered by zhangwei</Message>" in resp.text
    assert answers[-1] == {"flow_run_id": "run-2", "by": "zhangwei", "values": {"acknowledged": True}, "step": "ack-head"}

    twilio_post(client, SMS_PATH, {"From": PHONE, "Body": f"驳回 {older.lower()}"})
    assert answers[-1] == {"flow_run_id": "run-1", "by": "zhangwei", "values": {"decision": "reject"}, "step": "approve-switch"}
    assert asks.pending(PHONE) == []


def test_sms_signature_unknown_sender_and_nonsense(client, answers):
    asks.remember("+8613800000002", "run-1", "approve-switch", ["approve", "reject"], "zh")
    assert twilio_post(client, SMS_PATH, {"From": PHONE, "Body": "1"}, token="forged").status_code == 403

    resp = twilio_post(client, SMS_PATH, {"From": "+10000000000", "Body": "1"})
    assert resp.status_code == 200 and "not in the contacts directory" in resp.text

    resp = twilio_post(client, SMS_PATH, {"From": "+8613800000002", "Body": "maybe"})
    assert "回复 1 批准 / 2 驳回" in resp.text

    resp = twilio_post(client, SMS_PATH, {"From": "+8613800000002", "Body": "批准"})
    assert "⛔ li may not answer approve-switch" in resp.text  # answer_step refused: the person is told why
    assert [a["by"] for a in answers] == ["li"]


def test_voice_key_press_acknowledges(client, answers):
    path = VOICE_PATH + "?" + urlencode({"incident": "run-2", "step": "ack-head", "options": "ack", "lang": "zh"})
    resp = twilio_post(client, path, {"Digits": "1", "To": PHONE, "From": "+15005550006", "Direction": "outbound-api"})
    assert resp.status_code == 200 and '<Say language="zh-CN">已记录，谢谢。</Say>' in resp.text
    assert answers == [{"flow_run_id": "run-2", "by": "zhangwei", "values": {"acknowledged": True}, "step": "ack-head"}]

    assert "无效按键" in twilio_post(client, path, {"Digits": "9", "To": PHONE, "Direction": "outbound-api"}).text
    # Changing the query (another incident) breaks Twilio's signature over the URL.
    forged = client.post(VOICE_PATH + "?incident=run-X&options=ack", content=b"Digits=1",
                         headers={"X-Twilio-Signature": RequestValidator(AUTH).compute_signature(PUBLIC + path, {"Digits": "1"})})
    assert forged.status_code == 403 and len(answers) == 1


# --- Signed links ---

def test_signed_link_shows_choices_then_answers_on_post(client, answers):
    url = links.make_link("run-1", "approve-switch", "zhangwei", ["approve", "reject"])
    path = url.removeprefix(PUBLIC)

    page = client.get(path)
    assert page.status_code == 200 and "value='approve'" in page.text and "批准" in page.text
    assert answers == []  # opening the link (or a preview bot fetching it) answers nothing

    done = client.post(path, data={"choice": "reject"})
    assert done.status_code == 200 and "answered by zhangwei" in done.text
    assert answers == [{"flow_run_id": "run-1", "by": "zhangwei", "values": {"decision": "reject"}, "step": "approve-switch"}]

    assert client.post(path, data={"choice": "ack"}).status_code == 400


def test_tampered_or_expired_links_are_refused(client, answers):
    token = links.make_link("run-1", "s", "zhangwei").rsplit("/", 1)[1]
    body, mac = token.split(".")
    other = links.make_link("run-1", "s", "li").rsplit("/", 1)[1].split(".")[0]
    assert client.post(f"/notify/link/{other}.{mac}", data={"choice": "ack"}).status_code == 403
    assert client.get(f"/notify/link/{body}").status_code == 403

    expired = links.make_link("run-1", "s", "zhangwei", ttl_seconds=1).rsplit("/", 1)[1]
    with pytest.raises(links.LinkError, match="expired"):
        links.verify(expired, now=time.time() + 5)
    assert answers == []


def test_link_for_someone_not_allowed_is_refused_by_answer_step(client, answers):
    path = links.make_link("run-1", "approve-switch", "li", ["approve"]).removeprefix(PUBLIC)
    resp = client.post(path, data={"choice": "approve"})
    assert resp.status_code == 409 and "li may not answer approve-switch" in resp.text
