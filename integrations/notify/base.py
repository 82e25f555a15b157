"""What every notification channel is: one small interface and one registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Message(BaseModel):
    """One page about one incident, independent of the channel that carries it."""

    incident_id: str = Field(description="Flow run id of the incident.")
    runbook_id: str
    title: str = Field(description="One line: runbook title and what happened.")
    text: str = Field(description="The body, already rendered.")
    severity: str | None = None
    step_id: str | None = Field(None, description="The step this message belongs to.")
    run_url: str | None = Field(None, description="Link to the run in the Prefect UI.")
    drill: bool = False
    needs_answer: bool = Field(False, description="True when the recipient is asked to acknowledge or approve.")
    answer_options: list[str] = Field(default_factory=list, description="e.g. ['ack'] or ['approve', 'reject'].")
    answer_url: str | None = Field(None, description="Signed link that answers the waiting step.")
    language: Literal["zh", "en"] = "zh"

    def headline(self) -> str:
        prefix = "[演练 DRILL] " if self.drill else ""
        sev = f"[{self.severity}] " if self.severity else ""
        return f"{prefix}{sev}{self.title}"


class Delivery(BaseModel):
    """One attempt to reach one person on one channel: the audit record of a page."""

    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    channel: str
    person: str
    to: str
    outcome: Literal["sent", "failed"]
    attempt: int = 1
    error: str | None = None
    provider_id: str | None = Field(None, description="Id the platform gave the message (Slack ts, Twilio SID).")
    queued_seconds: float = Field(0.0, description="How long the page was held before this attempt went out: waiting its turn "
                                                   "under the platform's rate limit, or for a robot that said 'too fast'.")


class ChannelError(Exception):
    """A channel could not deliver. `retry_after` is set when the platform said when to try again;
    `throttled` when what it said was "too many messages" (so waiting, not another channel, is the cure);
    `unsent` when the request certainly never reached it (connection refused), so it used none of its quota."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False, throttled: bool = False,
                 unsent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.throttled = throttled
        self.unsent = unsent


class Channel(ABC):
    """Sends a Message to one address. Raises ChannelError on failure; never swallows it."""

    name: ClassVar[str]
    queued_seconds: float = 0.0  # how long the last send() held the message for the platform's rate limit

    @abstractmethod
    def send(self, message: Message, to: str) -> str | None:
        """Deliver and return the platform's message id, if any."""

    def secrets(self) -> list[str]:
        """Secret values this channel holds, so the dispatcher can scrub them from errors and logs."""
        return []


CHANNELS: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    CHANNELS[cls.name] = cls
    return cls


class Answer(BaseModel):
    """A step that was answered, as the messages that asked about it should now show it."""

    incident_id: str = Field(description="Message.incident_id of the pages that asked.")
    step_id: str | None
    by: str = Field(description="Who answered, as shown: a name, or a person id.")
    summary: str = Field(description="What they answered: 'ack', 'approve', 'reject' (shown in the message's language) or free text.")
    at: datetime


class EditableChannel(Channel):
    """A channel whose sent messages can be changed afterwards (Slack). Robots posting by webhook cannot.

    Its send() records each message that asks for an answer with `asked.remember(name, message, sent)`;
    `sent` is whatever close() needs to find the message again (Slack: channel id and ts).
    """

    @abstractmethod
    def close(self, message: Message, sent: dict, answer: Answer) -> None:
        """Rewrite the message that asked so it shows the answer and offers no more buttons. Raises ChannelError."""


class RetryPolicy(BaseSettings):
    """How hard to push one channel before trying the person's next one (RUNBOOK_NOTIFY_*)."""

    model_config = SettingsConfigDict(env_prefix="RUNBOOK_NOTIFY_", extra="ignore")

    attempts: int = Field(3, ge=1, description="Tries per channel, counting the first.")
    backoff_seconds: float = Field(2.0, ge=0, description="Wait before the second try; doubles after each.")
    backoff_factor: float = Field(2.0, ge=1)
    max_wait_seconds: float = Field(30.0, ge=0, description="Longest wait between tries. A Retry-After beyond it means: fall back now.")

    def wait_before(self, attempt: int, error: ChannelError) -> float | None:
        """Seconds to wait before try `attempt + 1`, or None to give up on this channel."""
        if error.permanent or attempt >= self.attempts:
            return None
        if error.retry_after is not None:
            # Honour the platform: never retry earlier than it asked. Too long to wait while paging? Fall back.
            return error.retry_after if error.retry_after <= self.max_wait_seconds else None
        return min(self.backoff_seconds * self.backoff_factor ** (attempt - 1), self.max_wait_seconds)
