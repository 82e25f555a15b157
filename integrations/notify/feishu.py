"""Feishu / Lark (飞书) custom bot, with its signature scheme when 签名校验 is on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from pydantic_settings import SettingsConfigDict

from integrations.notify import render
from integrations.notify.base import ChannelError, Message, register
from integrations.notify.config import secret
from integrations.notify.ratelimit import RateLimit
from integrations.notify.robots import Robot, RobotChannel, RobotConfig

# Platform limits (open.feishu.cn, custom bot): 100 requests a minute and 5 a second per bot; body ≤ 20 KB.
MESSAGES_PER_MINUTE = 100
MESSAGES_PER_SECOND = 5
RATE_LIMITS = (RateLimit(MESSAGES_PER_MINUTE, 60), RateLimit(MESSAGES_PER_SECOND, 1))  # enforced by ratelimit.RobotLine
BODY_MAX_BYTES = 20_000
TEXT_MAX_BYTES = 16_000   # room for the JSON around the text
ERR_RATE_LIMITS = {9499, 11232}  # "too many requests", "frequency limited"
RATE_RETRY_SECONDS = 1


class FeishuConfig(RobotConfig):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_FEISHU_", extra="ignore")


def sign(secret_value: str, timestamp_s: int) -> str:
    """sign = base64(HmacSHA256(key=f"{timestamp}\\n{secret}", msg=b"")) — Feishu keys the HMAC with the string."""
    digest = hmac.new(f"{timestamp_s}\n{secret_value}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def post_content(message: Message) -> dict[str, Any]:
    """A rich-text `post`: title, fact lines, body, link lines."""
    lines = [[{"tag": "text", "text": f"{k}: {v}"}] for k, v in render.facts(message)]
    if message.text:
        lines.append([{"tag": "text", "text": render.cut_bytes(message.text, TEXT_MAX_BYTES)}])
    lines += [[{"tag": "a", "text": k, "href": v}] for k, v in render.links(message)]
    locale = "zh_cn" if message.language == "zh" else "en_us"
    return {"post": {locale: {"title": message.headline(), "content": lines}}}


@register
class FeishuChannel(RobotChannel):
    name = "feishu"
    config_class = FeishuConfig
    env_prefix = "RUNBOOK_FEISHU_"
    rate_limits = RATE_LIMITS

    def request(self, message: Message, robot: Robot) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"msg_type": "post", "content": post_content(message)}
        key = secret(robot.secret)
        if key:
            ts = int(time.time())
            body.update(timestamp=str(ts), sign=sign(key, ts))
        return robot.webhook.get_secret_value(), body

    def check(self, reply: dict[str, Any]) -> None:
        code = reply.get("code", reply.get("StatusCode", 0))
        if code == 0:
            return
        text = f"Feishu refused the message: code {code} {reply.get('msg', '')}".strip()
        if code in ERR_RATE_LIMITS:
            raise ChannelError(text, retry_after=RATE_RETRY_SECONDS, throttled=True)
        raise ChannelError(text, permanent=True)
