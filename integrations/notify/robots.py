"""Chat group robots (DingTalk, WeCom, Feishu): a named webhook per group, secrets from the environment.

An Address on these channels names a robot (`to: ops-group`), not a URL: the
webhook URL carries the robot's credential, so it belongs in the environment,
not in contacts.yaml. RUNBOOK_<CH>_WEBHOOK (+ _SECRET) defines the robot named
"default"; RUNBOOK_<CH>_ROBOTS='{"ops": {"webhook": "...", "secret": "..."}}' adds more.

Each platform caps messages per robot (its RATE_LIMITS); every post waits its turn in the
robot's line (ratelimit.py), shared by all processes, and a "too fast" answer is waited
out in place rather than dropped or passed to the next channel.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings

from integrations.notify.base import Channel, ChannelError, Message
from integrations.notify.config import secret
from integrations.notify.jsonpost import post_json
from integrations.notify.ratelimit import RateLimit, RobotLine, robot_key

DEFAULT_ROBOT = "default"
THROTTLED_RETRIES = 3  # "too fast" answers waited out for one page; then it is a failure the dispatcher handles


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
    rate_limits: ClassVar[Sequence[RateLimit]]  # the platform's published limits for one robot

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
        line = RobotLine(robot_key(self.name, robot.webhook.get_secret_value()), self.rate_limits)
        try:
            throttled = 0
            while True:
                line.wait_turn()
                url, body = self.request(message, robot)  # after the wait: signatures carry a fresh timestamp
                try:
                    post_json(url, body, timeout=self.config.timeout, check=self.check)
                    return None
                except ChannelError as exc:
                    if exc.unsent:
                        line.unsend()  # a robot that is down used none of its quota
                    if not exc.throttled or throttled >= THROTTLED_RETRIES:
                        raise
                    throttled += 1
                    line.hold(exc.retry_after or 0.0)
        finally:
            self.queued_seconds = line.held_seconds
            line.leave()
