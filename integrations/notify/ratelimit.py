"""Messages per minute for the group robots, held across every process that pages.

DingTalk, WeCom and Feishu robots refuse messages beyond a few a minute (and DingTalk
then goes silent for ten minutes). Each incident is its own flow-run process and many
run at once, so the count is kept where they all see it: SQLite under the state dir,
one sliding window of send times per robot. A page beyond the limit is not dropped
and does not jump the queue: it takes a ticket, waits until it is first in line for
its robot and one more message fits every window, then records its send time and
goes; the next page waits until it has arrived, and the window counts it from the end of
its post (the platform counted it somewhere in between). A robot that still says "too fast" holds the whole robot (for every process)
for as long as it asked, and the page keeps its place at the head of the line.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Sequence

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.notify.store import database

logger = logging.getLogger("runbook.notify")

SAFETY_MARGIN_FRACTION = 0.05  # of a window: our clock is not the platform's, and requests take time to arrive
SAFETY_MARGIN_SECONDS = 0.25   # at least this, whatever the window
POLL_SECONDS = 1.0             # longest sleep between looks at the line (each look also says "still waiting")
FAST_POLL_SECONDS = 0.01       # when only the pages ahead have to go first
STALE_SECONDS = 120            # a ticket not looked at for this long belongs to a process that died (> a robot's post timeout)


@dataclass(frozen=True)
class RateLimit:
    """At most `messages` in any `seconds`: one of a platform's published limits for one robot."""

    messages: int
    seconds: float


class RateSettings(BaseSettings):
    """RUNBOOK_NOTIFY_RATE_*: how the robots' limits are applied."""

    model_config = SettingsConfigDict(env_prefix="RUNBOOK_NOTIFY_RATE_", extra="ignore")

    time_scale: float = Field(1.0, gt=0, description="Divides every window and every platform hold: 30 makes DingTalk's "
                                                     "20 a minute 20 in 2 s. For tests against fakes only; real robots keep real minutes.")
    long_wait_seconds: float = Field(300.0, ge=0, description="A page held longer than this is still sent, in its turn, "
                                                              "and the wait is logged as a warning (Delivery.queued_seconds has it).")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (robot TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sends_robot ON sends (robot, at);
CREATE TABLE IF NOT EXISTS line (
    ticket INTEGER PRIMARY KEY AUTOINCREMENT,
    robot TEXT NOT NULL,
    seen REAL NOT NULL,               -- last look by its process: a process that died leaves a stale ticket
    posting INTEGER NOT NULL DEFAULT 0  -- its send time is in `sends` and it is being posted now
);
CREATE INDEX IF NOT EXISTS line_robot ON line (robot, ticket);
CREATE TABLE IF NOT EXISTS holds (robot TEXT PRIMARY KEY, until REAL NOT NULL);
"""


def robot_key(channel: str, webhook: str) -> str:
    """Names a robot by its webhook (two names for one webhook share one limit) without keeping its credential."""
    return f"{channel}:{hashlib.sha256(webhook.encode()).hexdigest()[:16]}"


def margin(window: float) -> float:
    return max(window * SAFETY_MARGIN_FRACTION, SAFETY_MARGIN_SECONDS)


def next_slot(sent: Sequence[float], limits: Sequence[RateLimit], after: float) -> float:
    """The earliest time, not before `after` nor before the last send, at which one more message keeps every limit.

    `sent` is the send times, oldest first. The (n)th-latest send must have left the window of a limit
    of n messages, with a margin.
    """
    slot = max([after, *sent[-1:]])
    for limit in limits:
        if len(sent) >= limit.messages:
            slot = max(slot, sent[-limit.messages] + limit.seconds + margin(limit.seconds))
    return slot


class RobotLine:
    """The line of pages for one robot. `wait_turn()` before each post; `leave()` when done, sent or not.

    A page keeps its place at the head of the line from its turn until leave(), through its post and any
    "too fast" hold, so pages reach the robot in the order they joined the line, one at a time.
    """

    def __init__(self, robot: str, limits: Sequence[RateLimit], settings: RateSettings | None = None):
        self.robot = robot
        self.settings = settings or RateSettings()
        self.limits = [RateLimit(lim.messages, lim.seconds / self.settings.time_scale) for lim in limits]
        self.keep = max(lim.seconds + margin(lim.seconds) for lim in self.limits) if self.limits else 0.0
        self.ticket: int | None = None
        self.held_seconds = 0.0
        self._warned = False
        self._sent_at: float | None = None
        self._db = database("robot-sends", _SCHEMA)

    def _look(self, db, now: float) -> tuple[bool, float]:
        """(my turn now?, when it should be): inside the caller's transaction."""
        db.execute("DELETE FROM line WHERE seen < ?", (now - STALE_SECONDS,))
        if db.execute("UPDATE line SET seen = ? WHERE ticket = ?", (now, self.ticket)).rowcount == 0:
            # Our ticket went stale (this process stalled): back in line with the same number, so no later page passes.
            db.execute("INSERT INTO line (ticket, robot, seen) VALUES (?, ?, ?)", (self.ticket, self.robot, now))
        ahead, waiting = db.execute("SELECT COUNT(*), COUNT(*) - TOTAL(posting) FROM line WHERE robot = ? AND ticket < ?",
                                    (self.robot, self.ticket)).fetchone()
        sent = [r[0] for r in db.execute("SELECT at FROM sends WHERE robot = ? AND at > ? ORDER BY at",
                                         (self.robot, now - self.keep))]
        hold = db.execute("SELECT until FROM holds WHERE robot = ?", (self.robot,)).fetchone()
        slot = next_slot(sent, self.limits, max(now, hold[0] if hold else now))
        for _ in range(int(waiting)):  # the pages ahead go first, each in its own slot
            sent.append(slot)
            slot = next_slot(sent, self.limits, slot)
        return ahead == 0 and slot <= now, slot

    def wait_turn(self) -> None:
        """Block until this page is first in line and fits every limit; record its send time. Never gives up."""
        started = time.time()
        db = self._db
        if self.ticket is None:
            self.ticket = db.execute("INSERT INTO line (robot, seen) VALUES (?, ?)", (self.robot, started)).lastrowid
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                go, slot = self._look(db, now)
                if go:  # the ticket stays at the head until leave(): the next page goes after this one has arrived
                    db.execute("INSERT INTO sends (robot, at) VALUES (?, ?)", (self.robot, now))
                    db.execute("UPDATE line SET posting = 1 WHERE ticket = ?", (self.ticket,))
                    db.execute("DELETE FROM sends WHERE robot = ? AND at < ?", (self.robot, now - self.keep))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if go:
                self._sent_at = now
                self.held_seconds += now - started
                return
            if not self._warned and slot - started > self.settings.long_wait_seconds:
                self._warned = True
                logger.warning("a page to %s waits %.0f s for the robot's rate limit; it will be sent in its turn",
                               self.robot.split(":")[0], slot - started)
            time.sleep(min(max(slot - now, FAST_POLL_SECONDS), POLL_SECONDS))

    def _posted(self) -> None:
        """The post is over: its send time becomes now. The robot counted it when it arrived, somewhere between
        the start of the post and now, so counting from now keeps the next page a full window away however slow
        the post was."""
        if self._sent_at is not None:
            now = time.time()
            self._db.execute("UPDATE sends SET at = ? WHERE rowid IN (SELECT rowid FROM sends WHERE robot = ? AND at = ? LIMIT 1)",
                             (now, self.robot, self._sent_at))
            self._sent_at = None

    def unsend(self) -> None:
        """The post never reached the robot: its send time does not count against the limit."""
        if self._sent_at is not None:
            self._db.execute("DELETE FROM sends WHERE rowid IN (SELECT rowid FROM sends WHERE robot = ? AND at = ? LIMIT 1)",
                             (self.robot, self._sent_at))
            self._sent_at = None

    def hold(self, seconds: float) -> None:
        """The robot said "too fast": nobody posts to it for `seconds`; this page is still first in line."""
        self._posted()
        until = time.time() + seconds / self.settings.time_scale
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO holds (robot, until) VALUES (?, ?) "
                   "ON CONFLICT (robot) DO UPDATE SET until = max(until, excluded.until)", (self.robot, until))
        db.execute("UPDATE line SET posting = 0 WHERE ticket = ?", (self.ticket,))
        db.execute("COMMIT")

    def leave(self) -> None:
        """Sent or given up: out of line, and the next page may go."""
        self._posted()
        if self.ticket is not None:
            self._db.execute("DELETE FROM line WHERE ticket = ?", (self.ticket,))
            self.ticket = None
