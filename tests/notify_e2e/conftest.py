"""Fixtures for paging end to end: fake Slack and Twilio, a contacts file, secrets, the real app, evidence.

The runbook flows run in this process against the session's Prefect server and page
through the real slack_sdk and twilio clients into local fake platforms; answers come
back through the project's one FastAPI app (app/web.py), signed exactly as
Slack and Twilio sign them. Everything the runs log is kept, so the last test can
look for the secrets in it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from app.inbound import SLACK_PATH, SMS_PATH, slack_signature
from runbooks.settings import get_settings
from tests.conftest import free_port
from tests.notify.fakes import FakeHTTP, Reply, Seen

# Distinctive values, so a leak anywhere is found by a plain substring search.
TWILIO_SID = "AC00e2e00e2e00e2e00e2e00e2e00e2e0"
SECRETS = {
    "slack_token": "xoxb-e2e-SLACKTOKEN-7f3a9c01",
    "slack_signing_secret": "e2eSIGNINGSECRET5d0c4be",
    "twilio_auth_token": "e2eTWILIOAUTH9a8b7c6d5e",
    "dingtalk_secret": "SECe2eDINGTALK3c2b1a0f9e",
    "dingtalk_access_token": "e2eDINGTOKEN77aa66bb55",
    "link_secret": "e2eLINKSECRET5e5e4d4d3c",
}
# What the libraries derive from them and put on the wire: Twilio's basic auth.
DERIVED = {"twilio_basic_auth": base64.b64encode(f"{TWILIO_SID}:{SECRETS['twilio_auth_token']}".encode()).decode()}

PUBLIC_URL = "https://runbook.e2e.example.org"
TWILIO_FROM = "+15005550006"

ALICE = {"id": "alice", "slack": "U0ALICE", "phone": "+15550000001"}
BOB = {"id": "bob", "slack": "U0BOB", "phone": "+15550000002"}
CAROL = {"id": "carol", "slack": "U0CAROL", "phone": "+15550000003"}
DRILL = {"id": "drill-desk", "slack": "U0DRILL", "phone": "+15550000009"}

CONTACTS = {
    "drill_recipients": ["drill-desk"],
    "people": [
        # Slack first: Alice is paged on Slack (SMS only if Slack fails).
        {"id": "alice", "name": "爱丽丝 Alice", "roles": ["first-responder"],
         "channels": [{"channel": "slack", "to": ALICE["slack"]}, {"channel": "sms", "to": ALICE["phone"]}]},
        # SMS first: Bob is paged by SMS, so he can answer by replying.
        {"id": "bob", "name": "鲍勃 Bob", "roles": ["backup"],
         "channels": [{"channel": "sms", "to": BOB["phone"]}, {"channel": "slack", "to": BOB["slack"]}]},
        # In the directory, but in none of the test runbooks' roles.
        {"id": "carol", "name": "卡罗尔 Carol", "roles": ["bystander"],
         "channels": [{"channel": "slack", "to": CAROL["slack"]}, {"channel": "sms", "to": CAROL["phone"]}]},
        # The drill desk's DingTalk robot is down (its webhook carries a secret), so drills fall back to Slack.
        {"id": "drill-desk", "name": "演练值班台 Drill desk",
         "channels": [{"channel": "dingtalk", "to": "default"}, {"channel": "slack", "to": DRILL["slack"]},
                      {"channel": "sms", "to": DRILL["phone"]}]},
    ],
}


@dataclass
class Platform:
    """A fake platform that remembers when each request arrived (time.monotonic())."""

    server: FakeHTTP
    arrivals: list[tuple[float, Seen]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def since(self, t: float) -> list[tuple[float, Seen]]:
        return [(at, seen) for at, seen in list(self.arrivals) if at >= t]


def _recording(platform_holder: list, reply_fn):
    def reply(seen: Seen) -> Reply:
        platform_holder[0].arrivals.append((time.monotonic(), seen))
        return reply_fn(seen)

    return reply


def _slack_reply(seen: Seen) -> Reply:
    body = seen.form if seen.headers.get("content-type", "").startswith("application/x-www-form") else seen.json
    channel = body["channel"]
    # A DM's conversation id: D + the user id's tail, so the test can tell whose thread a reply went to.
    conversation = "D" + channel[1:] if channel.startswith("U") else channel
    return Reply(body={"ok": True, "channel": conversation, "ts": f"{time.time():.6f}"})


def _twilio_reply(seen: Seen) -> Reply:
    kind = "SM" if seen.path.endswith("/Messages.json") else "CA"
    return Reply(201, {"sid": f"{kind}{len(seen.body):032d}", "status": "queued", "account_sid": TWILIO_SID})


def slack_recipient(seen: Seen) -> str:
    """The Slack user a chat.postMessage was for (a thread reply goes to the DM's D... id)."""
    channel = seen.json["channel"]
    return "U" + channel[1:] if channel.startswith("D") else channel


class Evidence(logging.Handler):
    """Every log record of the module's runs, formatted with tracebacks, as a secret would be printed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.run_ids: list[str] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception as exc:  # a record that cannot be formatted is itself worth seeing
            line = f"unformattable record from {record.name}: {exc!r} {record.msg!r} {record.args!r}"
        with self._lock2:
            self.lines.append(line)


class _InFlowRun(logging.Filter):
    """Pass records made inside a flow or task run, so the API log handler never complains about a missing run."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


# Loggers whose DEBUG output could carry a credential: ours, and the HTTP libraries the channels use.
VERBOSE_LOGGERS = ("runbook", "urllib3", "slack_sdk", "twilio", "httpx", "requests")


@pytest.fixture(scope="module")
def evidence():
    handler = Evidence()
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in VERBOSE_LOGGERS}
    for name in VERBOSE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    # The journal lines ("[page.sent] ...") also go to the run's log in Prefect, as the architecture says.
    from prefect.logging.handlers import APILogHandler

    api = APILogHandler()
    api.setLevel(logging.INFO)
    api.addFilter(_InFlowRun())
    ours = logging.getLogger("runbook")
    ours.addHandler(api)
    handler.api = api
    yield handler
    ours.removeHandler(api)
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def platforms():
    slack_holder: list[Platform] = []
    twilio_holder: list[Platform] = []
    slack = Platform(FakeHTTP(_recording(slack_holder, _slack_reply)))
    twilio = Platform(FakeHTTP(_recording(twilio_holder, _twilio_reply)))
    slack_holder.append(slack)
    twilio_holder.append(twilio)
    yield {"slack": slack, "twilio": twilio}
    slack.server.close()
    twilio.server.close()


@pytest.fixture(scope="module")
def notify_env(tmp_path_factory, platforms, evidence):
    """RUNBOOK_* settings for the module: temporary contacts and state, fake platforms, the secrets. Restored after."""
    home = tmp_path_factory.mktemp("notify-e2e")
    contacts = home / "contacts.yaml"
    contacts.write_text(yaml.safe_dump(CONTACTS, allow_unicode=True, sort_keys=False), encoding="utf-8")
    dead_port = free_port()  # nothing listens there: the DingTalk robot is down
    values = {
        "RUNBOOK_CONTACTS_FILE": str(contacts),
        "RUNBOOK_STATE_DIR": str(home / "var"),
        "RUNBOOK_ANSWER_POLL_SECONDS": "0.2",
        "RUNBOOK_NOTIFY_BACKOFF_SECONDS": "0.05",
        "RUNBOOK_NOTIFY_ATTEMPTS": "2",
        "RUNBOOK_PUBLIC_URL": PUBLIC_URL,
        "RUNBOOK_LINK_SECRET": SECRETS["link_secret"],
        "RUNBOOK_SLACK_TOKEN": SECRETS["slack_token"],
        "RUNBOOK_SLACK_SIGNING_SECRET": SECRETS["slack_signing_secret"],
        "RUNBOOK_SLACK_BASE_URL": platforms["slack"].url + "/api/",
        "RUNBOOK_SLACK_TIMEOUT": "5",
        "RUNBOOK_TWILIO_ACCOUNT_SID": TWILIO_SID,
        "RUNBOOK_TWILIO_AUTH_TOKEN": SECRETS["twilio_auth_token"],
        "RUNBOOK_TWILIO_FROM": TWILIO_FROM,
        "RUNBOOK_TWILIO_BASE_URL": platforms["twilio"].url,
        "RUNBOOK_TWILIO_TIMEOUT": "5",
        "RUNBOOK_DINGTALK_WEBHOOK": f"http://127.0.0.1:{dead_port}/robot/send?access_token={SECRETS['dingtalk_access_token']}",
        "RUNBOOK_DINGTALK_SECRET": SECRETS["dingtalk_secret"],
        "RUNBOOK_DINGTALK_TIMEOUT": "2",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    yield {"home": home, "contacts": contacts}
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def app(notify_env):
    """The project's one FastAPI app (alert receiver + notify answers), without the spool drainer."""
    from app.web import create_app

    with TestClient(create_app(drain=False)) as client:
        yield client


# --- requests as the platforms make them ------------------------------------------------------

def slack_click(app: TestClient, user: str, value: str, *, secret: str | None = None, choice: str = "ack",
                response_url: str | None = None):
    """A block_actions interaction as Slack posts it: form field `payload`, signed v0 with the signing secret."""
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()}, "team": {"id": "T0E2E"},
               "container": {"type": "message"}, "trigger_id": "1.2.3",
               "actions": [{"type": "button", "action_id": f"runbook_answer_{choice}", "block_id": "b1", "value": value,
                            "action_ts": f"{time.time():.6f}"}]}
    if response_url:
        payload["response_url"] = response_url
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    signature = slack_signature(secret or SECRETS["slack_signing_secret"], ts, body)
    return app.post(SLACK_PATH, content=body, headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
                                                       "Content-Type": "application/x-www-form-urlencoded"})


def sms_reply(app: TestClient, sender: str, text: str, *, token: str | None = None):
    """An incoming SMS as Twilio posts it to the number's webhook, with X-Twilio-Signature over URL + sorted params."""
    params = {"ToCountry": "US", "SmsMessageSid": "SM" + "e" * 32, "NumMedia": "0", "From": sender, "To": TWILIO_FROM,
              "Body": text, "MessageSid": "SM" + "e" * 32, "AccountSid": TWILIO_SID, "ApiVersion": "2010-04-01"}
    signature = RequestValidator(token or SECRETS["twilio_auth_token"]).compute_signature(PUBLIC_URL + SMS_PATH, params)
    return app.post(SMS_PATH, content=urlencode(params).encode(),
                    headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


def all_secret_values() -> dict[str, str]:
    return {**SECRETS, **DERIVED}


def text_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".html", ".md", ".txt", ".log")]
