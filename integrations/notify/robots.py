"""Chat group robots (DingTalk, WeCom, Feishu): a named webhook per group, secrets from the environment.

An Address on these channels names a robot (`to: ops-group`), not a URL: the
webhook URL carries the robot's credential, so it belongs in the environment,
not in contacts.yaml. RUNBOOK_<CH>_WEBHOOK (+ _SECRET) defines the robot named
"default"; RUNBOOK_<CH>_ROBOTS='{"ops": {"webhook": "...", "secret": "..."}}' adds more.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings

from integrations.notify.base import Channel, ChannelError, Message
from integrations.notify.config import secret
from integrations.notify.jsonpost import post_json

DEFAULT_ROBOT = "default"


class Robot(BaseModel):
    webhook: SecretStr = Field(description="The robot's full webhook URL, including its access token or key.")
    secret: SecretStr | None = Field(None, description="Signing secret, when the robot has signing switched on.")


class RobotConfig(BaseSettings):
    """Subclassed per platform with its env prefix."""

    webhook: SecretStr | None = None
    secret: SecretStr | None = None
    robots: dict[str, Robot] = Field(default_factory=dict)
    timeout: float = 10

    def robot(self, name: str) -> Robot | None:
        if name in self.robots:
            return self.robots[name]
        if name == DEFAULT_ROBOT and self.webhook is not None:
            return Robot(webhook=self.webhook, secret=self.secret)
        return None

    def all_secrets(self) -> list[str]:
        values = [secret(self.webhook), secret(self.secret)]
        for r in self.robots.values():
            values += [secret(r.webhook), secret(r.secret)]
        return [v for v in values if v]


class RobotChannel(Channel):
    config_class: type[RobotConfig]
    env_prefix: str

    def __init__(self, config: RobotConfig | None = None):
        self.config = config or self.config_class()

    def secrets(self) -> list[str]:
        return self.config.all_secrets()

    @abstractmethod
    def request(self, message: Message, robot: Robot) -> tuple[str, dict[str, Any]]:
        """The URL (signed if need be) and JSON body to post."""

    @abstractmethod
    def check(self, reply: dict[str, Any]) -> None:
        """Raise ChannelError when the platform's reply reports a failure."""

    def send(self, message: Message, to: str) -> str | None:
        robot = self.config.robot(to)
        if robot is None:
            known = sorted(self.config.robots) + ([DEFAULT_ROBOT] if self.config.webhook else [])
            raise ChannelError(f"no {self.name} robot named '{to}' (known: {', '.join(known) or 'none'}); "
                               f"set {self.env_prefix}WEBHOOK or {self.env_prefix}ROBOTS", permanent=True)
        url, body = self.request(message, robot)
        post_json(url, body, timeout=self.config.timeout, check=self.check)
        return None
