"""DingTalk (钉钉) custom group robot, with the signed-timestamp scheme when the robot has 加签 on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote_plus

from pydantic_settings import SettingsConfigDict

from integrations.notify import render
from integrations.notify.base import ChannelError, Message, register
from integrations.notify.config import secret
from integrations.notify.ratelimit import RateLimit
from integrations.notify.robots import Robot, RobotChannel, RobotConfig

# Platform limits (open.dingtalk.com, custom robot): 20 messages a minute per robot, then 10 minutes throttled.
MESSAGES_PER_MINUTE = 20
RATE_LIMITS = (RateLimit(MESSAGES_PER_MINUTE, 60),)  # enforced across processes by ratelimit.RobotLine
THROTTLE_SECONDS = 600
MARKDOWN_MAX_BYTES = 4_000   # kept well inside the platform's message size limit; a page is a summary
ERR_TOO_FAST = 130101        # "send too fast"
ERR_SECURITY = 310000        # signature, keyword or IP check failed
ERR_BUSY = -1                # system busy


class DingTalkConfig(RobotConfig):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_DINGTALK_", extra="ignore")


def sign(secret_value: str, timestamp_ms: int) -> str:
    """sign = urlencode(base64(HmacSHA256(key=secret, msg=f"{timestamp}\\n{secret}")))."""
    digest = hmac.new(secret_value.encode(), f"{timestamp_ms}\n{secret_value}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


@register
class DingTalkChannel(RobotChannel):
    name = "dingtalk"
    config_class = DingTalkConfig
    env_prefix = "RUNBOOK_DINGTALK_"
    rate_limits = RATE_LIMITS

    def request(self, message: Message, robot: Robot) -> tuple[str, dict[str, Any]]:
        url = robot.webhook.get_secret_value()
        key = secret(robot.secret)
        if key:
            ts = int(time.time() * 1000)
            url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign(key, ts)}"
        body = {"msgtype": "markdown",
                "markdown": {"title": message.headline(), "text": render.markdown(message, MARKDOWN_MAX_BYTES)}}
        return url, body

    def check(self, reply: dict[str, Any]) -> None:
        code = reply.get("errcode", 0)
        if code == 0:
            return
        text = f"DingTalk refused the message: errcode {code} {reply.get('errmsg', '')}".strip()
        if code == ERR_TOO_FAST:
            raise ChannelError(text, retry_after=THROTTLE_SECONDS, throttled=True)
        raise ChannelError(text, permanent=code != ERR_BUSY)
