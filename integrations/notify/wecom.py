"""WeCom (企业微信) group robot: the webhook's `key` is its only credential; no signing."""

from __future__ import annotations

from typing import Any

from pydantic_settings import SettingsConfigDict

from integrations.notify import render
from integrations.notify.base import ChannelError, Message, register
from integrations.notify.ratelimit import RateLimit
from integrations.notify.robots import Robot, RobotChannel, RobotConfig

# Platform limits (developer.work.weixin.qq.com, 群机器人): 20 messages a minute per robot; markdown ≤ 4096 bytes UTF-8.
MESSAGES_PER_MINUTE = 20
RATE_LIMITS = (RateLimit(MESSAGES_PER_MINUTE, 60),)  # enforced across processes by ratelimit.RobotLine
MARKDOWN_MAX_BYTES = 4_096
ERR_FREQ_LIMIT = 45009   # api freq out of limit
ERR_BUSY = -1            # system busy
RATE_RETRY_SECONDS = 60  # the limit is per minute


class WeComConfig(RobotConfig):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_WECOM_", extra="ignore")


@register
class WeComChannel(RobotChannel):
    name = "wecom"
    config_class = WeComConfig
    env_prefix = "RUNBOOK_WECOM_"
    rate_limits = RATE_LIMITS

    def request(self, message: Message, robot: Robot) -> tuple[str, dict[str, Any]]:
        body = {"msgtype": "markdown", "markdown": {"content": render.markdown(message, MARKDOWN_MAX_BYTES)}}
        return robot.webhook.get_secret_value(), body

    def check(self, reply: dict[str, Any]) -> None:
        code = reply.get("errcode", 0)
        if code == 0:
            return
        text = f"WeCom refused the message: errcode {code} {reply.get('errmsg', '')}".strip()
        if code == ERR_FREQ_LIMIT:
            raise ChannelError(text, retry_after=RATE_RETRY_SECONDS, throttled=True)
        raise ChannelError(text, permanent=code != ERR_BUSY)
