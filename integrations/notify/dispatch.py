"""Delivery policy: each person's channels in order, retrying a channel a few times, then falling back.

Every attempt becomes a Delivery, sent or failed, so the incident record shows
exactly who was tried, how, and why it failed. A person nobody could reach ends
with failed records only, never with silence.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from pydantic import ValidationError

from integrations.contacts import Person
from integrations.notify import dingtalk, feishu, log, mail, slack, sms, voice, webhook, wecom  # noqa: F401  (register channels)
from integrations.notify import choices, links
from integrations.notify.base import CHANNELS, Channel, ChannelError, Delivery, Message, RetryPolicy
from integrations.notify.redact import install_log_redaction, scrub

logger = logging.getLogger("runbook.notify")
install_log_redaction()


def personal(message: Message, person: Person) -> Message:
    """Give the message a signed answer link for this person, when it asks for an answer and links are set up."""
    if not message.needs_answer or message.answer_url or not choices.options_of(message.answer_options, True):
        return message  # no quick answer to offer: the form is answered in the run's UI
    try:
        url = links.make_link(message.incident_id, message.step_id, person.id, message.answer_options, language=message.language)
    except links.LinkError:
        return message  # no public URL or link secret: the other ways to answer remain
    return message.model_copy(update={"answer_url": url})


def _describe(exc: Exception) -> str:
    """Name what is wrong without quoting the input: a settings error would otherwise echo the secret it failed on."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors(include_input=False))
    return scrub(f"{type(exc).__name__}: {exc}") or type(exc).__name__


def _held(channel: Channel) -> float:
    return round(channel.queued_seconds, 3)


def _try_channel(channel: Channel, message: Message, person: Person, channel_name: str, to: str,
                 policy: RetryPolicy, sleep: Callable[[float], None]) -> list[Delivery]:
    out: list[Delivery] = []
    attempt = 0
    while True:
        attempt += 1
        channel.queued_seconds = 0.0
        try:
            provider_id = channel.send(message, to)
        except ChannelError as exc:
            error = scrub(str(exc), channel.secrets()) or type(exc).__name__
            wait = policy.wait_before(attempt, exc)
            out.append(Delivery(channel=channel_name, person=person.id, to=to, outcome="failed", attempt=attempt, error=error,
                                queued_seconds=_held(channel)))
            logger.warning("page to %s via %s failed (attempt %d): %s%s", person.id, channel_name, attempt, error,
                           f"; retrying in {wait:g} s" if wait is not None else "")
            if wait is None:
                return out
            sleep(wait)
            continue
        except Exception as exc:  # a bug or an unmapped library error: record it, do not retry blindly
            error = scrub(f"unexpected {type(exc).__name__}: {exc}", channel.secrets())
            out.append(Delivery(channel=channel_name, person=person.id, to=to, outcome="failed", attempt=attempt, error=error,
                                queued_seconds=_held(channel)))
            logger.exception("page to %s via %s failed unexpectedly: %s", person.id, channel_name, error)
            return out
        held = _held(channel)
        out.append(Delivery(channel=channel_name, person=person.id, to=to, outcome="sent", attempt=attempt, provider_id=provider_id,
                            queued_seconds=held))
        logger.info("paged %s via %s (attempt %d)%s", person.id, channel_name, attempt,
                    f" after {held:g} s held for the platform's rate limit" if held else "")
        return out


def deliver(message: Message, people: list[Person], *, policy: RetryPolicy | None = None,
            sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Page every person; return every attempt. A person with no working channel gets failed records only."""
    policy = policy or RetryPolicy()
    deliveries: list[Delivery] = []
    for person in people:
        if not person.channels:
            deliveries.append(Delivery(channel="none", person=person.id, to="", outcome="failed", error="person has no channels"))
            logger.error("cannot page %s: no channels in the contacts directory", person.id)
            continue
        msg = personal(message, person)
        reached = False
        for address in person.channels:
            channel_cls = CHANNELS.get(address.channel)
            if channel_cls is None:
                deliveries.append(Delivery(channel=address.channel, person=person.id, to=address.to, outcome="failed",
                                           error=f"no channel '{address.channel}' is installed"))
                continue
            try:
                channel = channel_cls()
            except Exception as exc:  # e.g. a malformed RUNBOOK_* setting
                error = f"channel '{address.channel}' is misconfigured: {_describe(exc)}"
                deliveries.append(Delivery(channel=address.channel, person=person.id, to=address.to, outcome="failed", error=error))
                logger.error("%s", error)
                continue
            attempts = _try_channel(channel, msg, person, address.channel, address.to, policy, sleep)
            deliveries += attempts
            if attempts[-1].outcome == "sent":
                reached = True
                break
        if not reached:
            logger.error("could not page %s on any of %d channel(s)", person.id, len(person.channels))
    return deliveries
