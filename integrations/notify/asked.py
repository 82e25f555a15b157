"""The messages that asked for an answer, so that once the step is answered they all say so.

A step may be asked several times (first page, escalation tiers, reminders) on several
channels, and answered on any path: a Slack button, an SMS reply, a key press, a signed
link, the CLI or the Prefect UI. Whichever path it was, `answered()` rewrites every
message that asked and can still be edited (Slack) to show who answered, when and what,
without its buttons; and stops SMS replies going to the step.

The record is SQLite under the state dir, since pages are sent by many flow-run processes
and answers arrive in the web app's process.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from pydantic import BaseModel

from integrations.notify import asks
from integrations.contacts import load_directory
from integrations.notify.base import CHANNELS, Answer, ChannelError, EditableChannel, Message, RetryPolicy
from integrations.notify.redact import scrub
from integrations.notify.store import database
from runbooks.settings import get_settings

logger = logging.getLogger("runbook.notify")

ASKED_TTL_SECONDS = 30 * 24 * 3600  # forget messages of steps never answered after this long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS asked (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    step TEXT NOT NULL,          -- '' when the message named no step
    channel TEXT NOT NULL,
    sent TEXT NOT NULL,          -- JSON: where the message is (Slack: channel id and ts)
    message TEXT NOT NULL,       -- JSON: the Message, to render it again
    at REAL NOT NULL,
    closed REAL                  -- when an answered() took it; NULL while it still asks
);
CREATE INDEX IF NOT EXISTS asked_step ON asked (incident, step, closed);
"""


class Update(BaseModel):
    """One message that asked, rewritten (or not) to show the answer."""

    channel: str
    message_id: str | None
    outcome: str  # "updated" or "failed"
    attempts: int = 1
    error: str | None = None


def _db():
    return database("asked", _SCHEMA)


@contextmanager
def _transaction(db):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def remember(channel: str, message: Message, sent: dict) -> None:
    """Record that `message`, which asks for an answer, went out on `channel` and can be found by `sent`."""
    kept = message.model_copy(update={"answer_url": None})  # a signed link answers as its person: not kept on disk
    db = _db()
    now = time.time()
    with _transaction(db):
        db.execute("DELETE FROM asked WHERE at < ?", (now - ASKED_TTL_SECONDS,))
        db.execute("INSERT INTO asked (incident, step, channel, sent, message, at) VALUES (?, ?, ?, ?, ?, ?)",
                   (message.incident_id, message.step_id or "", channel, json.dumps(sent), kept.model_dump_json(), now))


@dataclass
class _Asked:
    id: int
    channel: str
    sent: dict
    message: Message


def _claim(incident_id: str, step_id: str | None) -> list[_Asked]:
    """Take the open messages of this step, so that two answered() at once (web app and engine) update each once."""
    db = _db()
    with _transaction(db):
        rows = db.execute("SELECT id, channel, sent, message FROM asked WHERE incident = ? AND step = ? AND closed IS NULL "
                          "ORDER BY id", (incident_id, step_id or "")).fetchall()
        db.executemany("UPDATE asked SET closed = ? WHERE id = ?", [(time.time(), r[0]) for r in rows])
    return [_Asked(r[0], r[1], json.loads(r[2]), Message.model_validate_json(r[3])) for r in rows]


def _release(asked: _Asked) -> None:
    """Could not update it: leave it open, so a later answered() for the step (the engine's, after the web app's) tries again."""
    _db().execute("UPDATE asked SET closed = NULL WHERE id = ?", (asked.id,))


def _display_name(by: str) -> str:
    try:
        person = load_directory(get_settings().contacts_file).person(by)
    except Exception:  # no directory here: the id is still a fine name
        return by
    return person.name if person else by


def _close(channel: EditableChannel, asked: _Asked, answer: Answer, sleep: Callable[[float], None]) -> Update:
    policy = RetryPolicy()
    attempt = 0
    while True:
        attempt += 1
        try:
            channel.close(asked.message, asked.sent, answer)
            return Update(channel=asked.channel, message_id=asked.sent.get("ts"), outcome="updated", attempts=attempt)
        except ChannelError as exc:
            wait = policy.wait_before(attempt, exc)
            if wait is None:
                error = scrub(str(exc), channel.secrets()) or type(exc).__name__
                if not exc.permanent:
                    _release(asked)
                return Update(channel=asked.channel, message_id=asked.sent.get("ts"), outcome="failed", attempts=attempt, error=error)
            sleep(wait)


def answered(incident_id: str, step_id: str | None, by: str, summary: str, at: datetime | None = None, *,
             sleep: Callable[[float], None] = time.sleep) -> list[Update]:
    """The step was answered: every message that asked for it says who answered, when and what, and loses its buttons.

    Call it once an answer is accepted, whatever the path. `incident_id` is the Message.incident_id the pages
    carried (the incident's own flow run, also for steps inside parallel tracks); `by` a person id (shown by
    name from the contacts directory) or a name; `summary` 'ack' / 'approve' / 'reject' or a line of text.
    Safe to call more than once: each message is updated once. Never raises: the answer is accepted already,
    and a message it could not update is in the returned Updates and the log.
    """
    try:
        asks.forget_everywhere(asks.code_for(incident_id, step_id))  # SMS replies no longer go to this step
        answer = Answer(incident_id=incident_id, step_id=step_id, by=_display_name(by), summary=summary,
                        at=at or datetime.now(timezone.utc))
        claimed = _claim(incident_id, step_id)
    except Exception as exc:  # state dir unwritable, damaged database: say so, do not fail the answer
        logger.warning("could not show the answer to %s/%s on the messages that asked: %s: %s",
                       incident_id, step_id, type(exc).__name__, exc)
        return []
    updates: list[Update] = []
    for asked in claimed:
        channel_cls = CHANNELS.get(asked.channel)
        try:
            channel = channel_cls() if channel_cls else None
        except Exception as exc:  # misconfigured now; a later call may succeed
            _release(asked)
            updates.append(Update(channel=asked.channel, message_id=asked.sent.get("ts"), outcome="failed",
                                  error=f"channel '{asked.channel}' is misconfigured: {type(exc).__name__}"))
            continue
        if not isinstance(channel, EditableChannel):
            continue
        try:
            update = _close(channel, asked, answer, sleep)
        except Exception as exc:  # a bug must not turn an accepted answer into an error for its sender
            _release(asked)
            update = Update(channel=asked.channel, message_id=asked.sent.get("ts"), outcome="failed",
                            error=scrub(f"unexpected {type(exc).__name__}: {exc}", channel.secrets()))
        if update.outcome == "failed":
            logger.warning("could not show the answer to %s/%s on %s message %s: %s", incident_id, step_id,
                           update.channel, update.message_id, update.error)
        updates.append(update)
    return updates
