"""Slack: one message per incident, later pages threaded under it, buttons to answer.

Uses slack_sdk's WebClient (chat.postMessage). Retries are left to the dispatcher,
so the client's own retry handlers are switched off. A message that asks is
remembered (asked.py); once the step is answered, chat.update rewrites it to say
who answered, when and what, and takes its buttons away.
"""

from __future__ import annotations

import json
import logging
from datetime import timezone
from urllib.error import URLError

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from integrations.notify import asked, choices
from integrations.notify.base import Answer, ChannelError, EditableChannel, Message, register
from integrations.notify.config import secret
from integrations.notify.jsonpost import RETRY_AFTER_DEFAULT, retry_after_seconds
from integrations.notify.store import JsonStore, state_path

logger = logging.getLogger("runbook.notify")

# Platform limits (api.slack.com: chat.postMessage and Block Kit reference).
TEXT_MAX = 40_000          # chat.postMessage `text`; longer is truncated by Slack
SECTION_TEXT_MAX = 3_000   # a section block's text
HEADER_TEXT_MAX = 150      # a header block's plain_text
FIELD_TEXT_MAX = 2_000     # one section field
BUTTON_TEXT_MAX = 75       # a button's label
BUTTON_VALUE_MAX = 2_000   # a button's value
RATE_PER_CHANNEL_PER_SECOND = 1  # chat.postMessage: about one message per second per channel

ACTION_PREFIX = "runbook_answer_"  # action_id of our answer buttons; the interactivity endpoint ignores others

# Slack `error` codes that no retry will fix.
PERMANENT_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "missing_scope", "msg_too_long", "no_text", "invalid_blocks",
    "restricted_action", "user_not_found", "cannot_dm_bot",
    # chat.update
    "message_not_found", "cant_update_message", "edit_window_closed",
}


class SlackConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_SLACK_", extra="ignore")

    token: SecretStr | None = Field(None, description="Bot token (xoxb-...) with chat:write.")
    signing_secret: SecretStr | None = Field(None, description="Signing secret that verifies interactivity requests.")
    base_url: str = Field("https://slack.com/api/", description="Web API base; tests point it at a local server.")
    timeout: int = Field(10, description="Seconds to wait for Slack.")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def button_value(incident_id: str, step_id: str | None, choice: str) -> str:
    """What a button carries back: which incident, which step, which answer."""
    value = json.dumps({"i": incident_id, "s": step_id, "c": choice}, separators=(",", ":"))
    if len(value) > BUTTON_VALUE_MAX:
        raise ChannelError("incident and step ids are too long for a Slack button", permanent=True)
    return value


def answered_line(answer: Answer, language: str) -> str:
    """'✅ 张伟 于 <time> 答复：批准' — Slack shows the time in each reader's own time zone."""
    at = answer.at if answer.at.tzinfo else answer.at.replace(tzinfo=timezone.utc)
    fallback = at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    when = f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"
    what = choices.label(answer.summary, language)
    if language == "zh":
        return f"✅ *{answer.by}* 于 {when} 答复：{what}"
    return f"✅ Answered by *{answer.by}* at {when}: {what}"


def blocks_for(message: Message, answer: Answer | None = None) -> list[dict]:
    """The message's blocks; once `answer` is given, the answer replaces the buttons."""
    lang = message.language
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": _cut(message.headline(), HEADER_TEXT_MAX)}}]
    fields = [f"*{'预案' if lang == 'zh' else 'Runbook'}*\n{message.runbook_id}"]
    if message.severity:
        fields.append(f"*{'级别' if lang == 'zh' else 'Severity'}*\n{message.severity}")
    if message.step_id:
        fields.append(f"*{'当前步骤' if lang == 'zh' else 'Step'}*\n{message.step_id}")
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, FIELD_TEXT_MAX)} for f in fields]})
    if message.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(message.text, SECTION_TEXT_MAX)}})
    if answer is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(answered_line(answer, lang), SECTION_TEXT_MAX)}})
    elements = []
    if message.needs_answer and answer is None:
        for choice in choices.options_of(message.answer_options, True):
            button = {"type": "button", "action_id": ACTION_PREFIX + choice,
                      "text": {"type": "plain_text", "text": _cut(choices.label(choice, lang), BUTTON_TEXT_MAX)},
                      "value": button_value(message.incident_id, message.step_id, choice)}
            if choice in (choices.ACK, choices.APPROVE):
                button["style"] = "primary"
            elif choice == choices.REJECT:
                button["style"] = "danger"
            elements.append(button)
    if message.run_url:
        elements.append({"type": "button", "action_id": "runbook_open_run", "url": message.run_url,
                         "text": {"type": "plain_text", "text": "打开运行 Open run" if lang == "zh" else "Open run"}})
    if elements:
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def fallback_text(message: Message, answer: Answer | None = None) -> str:
    """The notification text (phones, screen readers); blocks carry the layout."""
    parts = [message.headline(), message.text, answered_line(answer, message.language) if answer else ""]
    if message.run_url:
        parts.append(message.run_url)
    return _cut("\n".join(p for p in parts if p), TEXT_MAX)


def _error(e: SlackApiError) -> ChannelError:
    resp = e.response
    status = getattr(resp, "status_code", None)
    data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
    code = data.get("error") or f"HTTP {status}"
    if status == 429 or code == "ratelimited":
        headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
        retry = retry_after_seconds(headers.get("retry-after"))
        return ChannelError(f"Slack rate limit ({code})", retry_after=retry if retry is not None else RETRY_AFTER_DEFAULT)
    if status is not None and status >= 500:
        return ChannelError(f"Slack failed with HTTP {status} ({code})")
    return ChannelError(f"Slack refused the message: {code}", permanent=code in PERMANENT_ERRORS)


@register
class SlackChannel(EditableChannel):
    name = "slack"

    def __init__(self, config: SlackConfig | None = None):
        self.config = config or SlackConfig()

    def secrets(self) -> list[str]:
        return [s for s in (secret(self.config.token), secret(self.config.signing_secret)) if s]

    @staticmethod
    def threads() -> JsonStore:
        """Thread of each incident in each conversation: key 'incident|to' → {channel, ts}."""
        return JsonStore(state_path("slack-threads"))

    def _client(self) -> WebClient:
        token = secret(self.config.token)
        if not token:
            raise ChannelError("RUNBOOK_SLACK_TOKEN is not set", permanent=True)
        return WebClient(token=token, base_url=self.config.base_url, timeout=self.config.timeout, retry_handlers=[])

    def send(self, message: Message, to: str) -> str | None:
        client = self._client()
        key = f"{message.incident_id}|{to}"
        threads = self.threads()
        thread = threads.get(key)
        args = {"channel": thread["channel"] if thread else to, "text": fallback_text(message), "blocks": blocks_for(message)}
        if thread:
            args["thread_ts"] = thread["ts"]
        try:
            resp = client.chat_postMessage(**args)
        except SlackApiError as e:
            raise _error(e) from e
        except (URLError, TimeoutError, OSError, SlackClientError) as e:
            raise ChannelError(f"could not reach Slack: {type(e).__name__}") from e
        if not thread:
            # The reply's channel is the conversation id (a DM's D... id when `to` was a user id).
            threads.update(key, lambda _: {"channel": resp["channel"], "ts": resp["ts"]})
        if message.needs_answer:
            try:
                asked.remember(self.name, message, {"channel": resp["channel"], "ts": resp["ts"]})
            except Exception as exc:  # the page is out: failing it now would page again
                logger.warning("sent, but could not remember Slack message %s for its answer: %s", resp["ts"], exc)
        return resp["ts"]

    def close(self, message: Message, sent: dict, answer: Answer) -> None:
        client = self._client()
        try:
            client.chat_update(channel=sent["channel"], ts=sent["ts"], text=fallback_text(message, answer),
                               blocks=blocks_for(message, answer))
        except SlackApiError as e:
            raise _error(e) from e
        except (URLError, TimeoutError, OSError, SlackClientError) as e:
            raise ChannelError(f"could not reach Slack: {type(e).__name__}") from e
