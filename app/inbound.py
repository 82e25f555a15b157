"""Answers that arrive from outside the Prefect UI (Slack buttons, SMS replies, key presses, signed links).

Each endpoint first proves the request came from the platform (or from a link we
signed) — refusing with 403 otherwise — then maps the responder to a person in
the contacts directory and hands the answer to flows.answers.answer_step, which
decides whether that person may answer that step. Slack and Twilio get HTTP 200
with a readable refusal when the person is unknown or the answer is refused, so
the responder sees why instead of a platform error. Once an answer is accepted, the
messages that asked for it are rewritten to show it (integrations.notify.answered),
after the reply, so Slack's three-second deadline does not wait on it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs
from uuid import UUID

import requests
from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from prefect.exceptions import ObjectNotFound

from flows.answers import answer_step, waiting_run
from tasks.client import sync_client

from integrations.contacts import Directory, Person, load_directory
from integrations.notify import answered, asks, choices, links
from integrations.notify.config import NotifyConfig, secret
from integrations.notify.slack import ACTION_PREFIX, SlackConfig
from integrations.notify.twilio_common import TwilioConfig
from integrations.notify.voice import SAY_LANGUAGES, VOICE_PATH
from runbooks.settings import get_settings
from tasks.inputs import ask_of, step_of

logger = logging.getLogger("runbook.notify.inbound")

router = APIRouter()

SLACK_PATH = "/notify/slack/actions"
SMS_PATH = "/notify/twilio/sms"
SLACK_MAX_AGE_SECONDS = 300  # Slack's advice: refuse requests older than five minutes (replays)


@dataclass
class Outcome:
    ok: bool
    message: str


def directory() -> Directory:
    return load_directory(get_settings().contacts_file)


def _form(raw: bytes) -> dict[str, str]:
    """A urlencoded body as a dict of first values (Slack and Twilio never repeat a field)."""
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}


def still_waits(incident_id: str, step_id: str | None) -> str | None:
    """'waiting' (the step waits now), 'not now' (the run goes on, but not at that step), 'over' (the run ended
    or is gone), or None when that cannot be told (not a run id, Prefect unreachable)."""
    try:
        UUID(incident_id)
        run_id = UUID(waiting_run(incident_id, step_id))
        with sync_client() as client:
            run = client.read_flow_run(run_id)
    except ObjectNotFound:
        return "over"
    except Exception:
        return None
    if run.state is None:
        return None
    if run.state.is_final():
        return "over"
    return "waiting" if run.state.is_paused() and (step_id is None or _paused_step(run) == step_id) else "not now"


async def _sms_question(sender: str, quoted: set[str]) -> dict | None:
    """The question an SMS reply answers: the one whose code it quotes, else the newest that still waits.

    Questions of incidents that ended are dropped; one whose step is not waiting right now (already
    answered elsewhere, or not yet paused) is only chosen when nothing newer waits."""
    open_asks = asks.pending(sender)
    named = next((a for a in reversed(open_asks) if a["code"] in quoted), None)
    if named is not None:
        return named
    fallback = None
    for ask in reversed(open_asks):
        status = await run_in_threadpool(still_waits, ask["incident_id"], ask["step_id"])
        if status in ("waiting", None):
            return ask
        if status == "over":
            asks.forget(sender, ask["code"])
        elif fallback is None:
            fallback = ask
    return fallback


def _paused_step(run) -> str | None:
    key = run.state.state_details.pause_key if run.state else None
    return step_of(key) if ask_of(key) is not None else None


async def answer(incident_id: str, person: Person, choice: str, step_id: str | None, via: str,
                 background: BackgroundTasks | None = None) -> Outcome:
    """Hand one answer to the flow. a failure there becomes a readable refusal.

    Accepted, it is shown on every message that asked (after the response when `background` is given)."""
    try:
        # answer_step finds the parallel track's run when the incident's own run is not the one waiting
        result = await run_in_threadpool(answer_step, incident_id, by=person.id, values=choices.values_for(choice), step=step_id,
                                         via=via)
    except Exception as exc:
        logger.exception("answer from %s via %s to %s/%s failed", person.id, via, incident_id, step_id)
        return Outcome(False, f"the answer could not be recorded ({type(exc).__name__})")
    logger.info("answer from %s via %s to %s/%s: %s -> %s", person.id, via, incident_id, step_id, choice,
                "accepted" if result.ok else f"refused: {result.message}")
    if result.ok:  # answered: SMS replies from anyone paged for it must not go to it any more
        asks.forget_everywhere(asks.code_for(incident_id, step_id))
        show = (answered, incident_id, step_id or getattr(result, "step", None), person.id, choice, datetime.now(timezone.utc))
        if background is not None:
            background.add_task(*show)
        else:
            await run_in_threadpool(*show)
    return Outcome(bool(result.ok), str(result.message))


# --- Slack -------------------------------------------------------------------------------------

def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """v0=hex(HMAC-SHA256(signing secret, "v0:{timestamp}:{body}"))."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def _verify_slack(request: Request, body: bytes) -> None:
    key = secret(SlackConfig().signing_secret)
    if not key:
        raise HTTPException(503, "Slack answers are not set up: RUNBOOK_SLACK_SIGNING_SECRET is missing")
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    given = request.headers.get("X-Slack-Signature", "")
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        raise HTTPException(403, "missing or malformed Slack request timestamp") from None
    if age > SLACK_MAX_AGE_SECONDS:
        raise HTTPException(403, "Slack request is too old (possible replay)")
    if not hmac.compare_digest(slack_signature(key, timestamp, body), given):
        raise HTTPException(403, "Slack signature does not verify")


def _tell_slack(response_url: str, text: str) -> None:
    """Show the responder what happened, as a message only they see. Best effort: the answer is already recorded."""
    try:
        requests.post(response_url, json={"response_type": "ephemeral", "replace_original": False, "text": text}, timeout=5)
    except requests.RequestException as exc:
        logger.warning("could not tell Slack the outcome: %s", type(exc).__name__)


@router.post(SLACK_PATH)
async def slack_actions(request: Request, background: BackgroundTasks) -> JSONResponse:
    body = await request.body()
    _verify_slack(request, body)
    try:
        payload = json.loads(_form(body)["payload"])
    except (KeyError, ValueError):
        raise HTTPException(400, "expected a form field 'payload' with JSON") from None
    action = next((a for a in payload.get("actions", []) if str(a.get("action_id", "")).startswith(ACTION_PREFIX)), None)
    if payload.get("type") != "block_actions" or action is None:
        return JSONResponse({"ok": True, "message": "ignored"})  # e.g. the 'Open run' link button
    try:
        value = json.loads(action["value"])
        incident_id, step_id, choice = value["i"], value.get("s"), value["c"]
        choices.values_for(choice)
    except (KeyError, ValueError, TypeError):
        raise HTTPException(400, "button value is not one of ours") from None
    user = (payload.get("user") or {}).get("id", "")
    person = directory().person(user) if user else None
    if person is None:
        outcome = Outcome(False, f"Slack user {user or '?'} is not in the contacts directory; the answer was not recorded")
        logger.warning("refused Slack answer to %s/%s from unknown user %s", incident_id, step_id, user)
    else:
        outcome = await answer(incident_id, person, choice, step_id, via="slack", background=background)
    if payload.get("response_url"):
        mark = "✅" if outcome.ok else "⛔"
        background.add_task(_tell_slack, payload["response_url"], f"{mark} {outcome.message}")
    return JSONResponse({"ok": outcome.ok, "message": outcome.message})


# --- Twilio ------------------------------------------------------------------------------------

def _public_url(request: Request) -> str:
    """The URL Twilio signed: our public address when behind a proxy, else what we received."""
    base = NotifyConfig().public_url
    if not base:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return base.rstrip("/") + request.url.path + query


async def _verified_twilio_form(request: Request) -> dict[str, str]:
    token = secret(TwilioConfig().auth_token)
    if not token:
        raise HTTPException(503, "Twilio answers are not set up: RUNBOOK_TWILIO_AUTH_TOKEN is missing")
    form = _form(await request.body())
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if not RequestValidator(token).validate(_public_url(request), form, request.headers.get("X-Twilio-Signature", ""), algorithm):
        raise HTTPException(403, "Twilio signature does not verify")
    return form


def _twiml(doc) -> Response:
    return Response(str(doc), media_type="application/xml")


@router.post(SMS_PATH)
async def twilio_sms(request: Request, background: BackgroundTasks) -> Response:
    form = await _verified_twilio_form(request)
    sender, text = form.get("From", ""), form.get("Body", "").strip()
    reply = MessagingResponse()
    person = directory().person(sender) if sender else None
    if person is None:
        logger.warning("refused SMS answer from unknown number")
        reply.message("此号码不在联系人名单中，答复未记录。This number is not in the contacts directory; the answer was not recorded.")
        return _twiml(reply)
    words = text.split()
    quoted = {w.strip("[]()").upper() for w in words}
    ask = await _sms_question(sender, quoted)
    if ask is None:
        reply.message("没有等待您答复的问题。There is no question waiting for your answer.")
        return _twiml(reply)
    word = next((w for w in words if w.strip("[]()").upper() != ask["code"]), "")
    choice = choices.parse_reply(word, ask["options"])
    if choice is None:
        reply.message(choices.reply_hint(ask["options"], ask.get("language", "zh")) + f" [{ask['code']}]")
        return _twiml(reply)
    outcome = await answer(ask["incident_id"], person, choice, ask["step_id"], via="sms", background=background)
    reply.message(("✅ " if outcome.ok else "⛔ ") + outcome.message)
    return _twiml(reply)


_VOICE_WORDS = {
    "zh": {"ok": "已记录，谢谢。", "refused": "答复未被接受：", "unknown": "此号码不在联系人名单中，答复未记录。", "bad": "无效按键，答复未记录。"},
    "en": {"ok": "Recorded. Thank you.", "refused": "The answer was not accepted: ", "unknown": "This number is not in the contacts directory.", "bad": "That key is not an option."},
}


@router.post(VOICE_PATH)
async def twilio_voice(request: Request, background: BackgroundTasks) -> Response:
    form = await _verified_twilio_form(request)
    q = request.query_params
    lang = q.get("lang", "zh") if q.get("lang") in _VOICE_WORDS else "zh"
    words, say_lang = _VOICE_WORDS[lang], SAY_LANGUAGES[lang]
    reply = VoiceResponse()
    # On a call we placed, the person is the callee ("To"); on a call to us, the caller.
    callee = form.get("To", "") if form.get("Direction", "outbound-api").startswith("outbound") else form.get("From", "")
    person = directory().person(callee) if callee else None
    incident_id, step_id = q.get("incident"), q.get("step")
    options = [o for o in q.get("options", "").split(",") if o in choices.KNOWN]
    if person is None:
        reply.say(words["unknown"], language=say_lang)
        return _twiml(reply)
    choice = choices.parse_reply(form.get("Digits", ""), options)
    if not incident_id or choice is None:
        reply.say(words["bad"], language=say_lang)
        return _twiml(reply)
    outcome = await answer(incident_id, person, choice, step_id, via="voice", background=background)
    reply.say(words["ok"] if outcome.ok else words["refused"] + outcome.message, language=say_lang)
    return _twiml(reply)


# --- Signed links ------------------------------------------------------------------------------

def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
                        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}", status_code=status)


def _claims(token: str) -> links.LinkClaims:
    try:
        claims = links.verify(token)
    except links.LinkError as exc:
        raise HTTPException(403, f"this link is not valid: {exc}") from None
    return claims


@router.get(links.LINK_PATH + "/{token}")
async def link_page(token: str) -> HTMLResponse:
    """Show the choices; answering needs a POST so link previews cannot answer."""
    try:
        claims = _claims(token)
    except HTTPException as exc:
        return _page("⛔", f"<p>{html.escape(exc.detail)}</p>", exc.status_code)
    buttons = "".join(f"<button name=choice value='{o}'>{html.escape(choices.label(o, claims.language))}</button> " for o in claims.options)
    step = html.escape(claims.step_id or "")
    return _page(f"{claims.incident_id} {step}".strip(), f"<form method=post>{buttons}</form>")


@router.post(links.LINK_PATH + "/{token}")
async def link_answer(token: str, request: Request, background: BackgroundTasks) -> HTMLResponse:
    try:
        claims = _claims(token)
    except HTTPException as exc:
        return _page("⛔", f"<p>{html.escape(exc.detail)}</p>", exc.status_code)
    choice = _form(await request.body()).get("choice", "")
    if choice not in claims.options:
        return _page("⛔", "<p>not one of the offered answers</p>", 400)
    person = directory().person(claims.person)
    if person is None:
        return _page("⛔", f"<p>{html.escape(claims.person)} is no longer in the contacts directory</p>", 403)
    outcome = await answer(claims.incident_id, person, choice, claims.step_id, via="link", background=background)
    return _page("✅" if outcome.ok else "⛔", f"<p>{html.escape(outcome.message)}</p>", 200 if outcome.ok else 409)
