"""The intake's memory on disk, under ``settings.state_dir``.

* the **spool**: every accepted alert, written before the sender hears 202, drained
  in order into Prefect; what was not yet handed over survives a restart.
* the **ledger**: alert group -> incident (flow run) per runbook, with an episode
  number, so re-sends join the open incident and a new firing after it closed
  starts the next one.
  Its members are the alerts seen firing in each episode: the incident hears
  "resolved" when the last of them resolves.
* ``unrouted.jsonl``: alerts no route took, with the reason, for whoever writes routes.

SQLite (stdlib) because it gives durable, ordered appends and atomic updates
without another service to run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    item        TEXT NOT NULL,              -- {"alert": {...}, "decision": {...}}
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed
    outcome     TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS spool_pending ON spool(state, id);
CREATE TABLE IF NOT EXISTS incidents (
    runbook        TEXT NOT NULL,
    grp            TEXT NOT NULL,
    episode        INTEGER NOT NULL,
    flow_run_id    TEXT NOT NULL,
    opened_at      TEXT NOT NULL,
    last_starts_at TEXT,                    -- newest alert start seen in this episode
    PRIMARY KEY (runbook, grp)
);
CREATE TABLE IF NOT EXISTS members (         -- alerts seen firing in an episode
    runbook     TEXT NOT NULL,
    grp         TEXT NOT NULL,
    episode     INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    firing      INTEGER NOT NULL,
    PRIMARY KEY (runbook, grp, episode, fingerprint)
);
CREATE TABLE IF NOT EXISTS resolutions (      -- the incident was told its group resolved
    flow_run_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    at          TEXT NOT NULL
);
"""


def json_line(value: Any) -> str:
    """JSON text that is always valid UTF-8: readable where it can be, escaped where text is not Unicode."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True)
    return text


def spool_text(item: dict[str, Any]) -> str:
    """A spool entry as stored; raises ValueError (or TypeError) if it cannot be."""
    return json_line(item)


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class SpoolItem:
    id: int
    received_at: str
    item: dict[str, Any]
    attempts: int


@dataclass
class Incident:
    runbook: str
    grp: str
    episode: int
    flow_run_id: str
    opened_at: str
    last_starts_at: str | None


def connect(path: Path, busy_timeout: float, *, durable: bool, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the intake's database in WAL mode, autocommit (transactions are begun by hand), rows by name;
    `durable`: each commit waits for the disk."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=check_same_thread)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    db.row_factory = sqlite3.Row
    return db


class Store:
    def __init__(self, state_dir: Path, *, busy_timeout: float = 30):
        self.busy_timeout = busy_timeout  # how long a write waits for a locked database before it fails
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "intake.sqlite3"
        self.unrouted_path = self.dir / "unrouted.jsonl"
        self._lock = threading.Lock()
        self._kept = threading.local()  # each thread's connections (Store._db)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept open (opening one, with its pragmas, cost more than the statements most
        calls run on it: a third of a storm's drain). `durable`: each commit waits for the disk (an accepted alert is
        on disk before we answer 202). Else a commit survives the process dying but not the machine losing power: in
        WAL mode what a power loss can take is the last commits, in order, so the spool's marks go with the ledger's
        writes before them and their alerts are handled again (a run is started with an idempotency key: the same run
        again). Each durable commit costs a disk flush, milliseconds, which a storm's hundreds of ledger writes cannot
        afford. A block that leaves a transaction open (it raised between BEGIN and COMMIT) has it rolled back."""
        kept = self._kept.__dict__
        if kept.get("pid") != os.getpid():  # a forked child opens its own: a connection must not cross a fork
            kept.clear()
            kept["pid"] = os.getpid()
        db = kept.get(durable)
        if db is None:
            db = kept[durable] = connect(self.path, self.busy_timeout, durable=durable)
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

    # ---------------------------------------------------------------- spool

    def append(self, items: list[dict[str, Any] | str]) -> list[int]:
        """Add alerts to the spool in one transaction; their ids, in order.
        An item may come already serialised (``spool_text``), so a bad one is found before the transaction."""
        if not items:
            return []
        texts = [item if isinstance(item, str) else spool_text(item) for item in items]
        ids = []
        with self._db(durable=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for text in texts:
                    cur = db.execute("INSERT INTO spool (received_at, item) VALUES (?, ?)", (now(), text))
                    ids.append(cur.lastrowid)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return ids

    def next_pending(self) -> SpoolItem | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM spool WHERE state = 'pending' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return SpoolItem(row["id"], row["received_at"], json.loads(row["item"]), row["attempts"])

    def finish(self, spool_id: int, state: str, outcome: str) -> None:
        with self._db() as db:
            db.execute("UPDATE spool SET state = ?, outcome = ?, attempts = attempts + 1 WHERE id = ?",
                       (state, outcome, spool_id))

    def retried(self, spool_id: int, outcome: str) -> None:
        with self._db() as db:
            db.execute("UPDATE spool SET attempts = attempts + 1, outcome = ? WHERE id = ?", (outcome, spool_id))

    def pending_count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM spool WHERE state = 'pending'").fetchone()[0]

    def spool_rows(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM spool ORDER BY id")]

    # ---------------------------------------------------------------- ledger

    def incident(self, runbook: str, grp: str) -> Incident | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM incidents WHERE runbook = ? AND grp = ?", (runbook, grp)).fetchone()
        return Incident(**dict(row)) if row else None

    def open_episode(self, runbook: str, grp: str, episode: int, flow_run_id: str, starts_at: str | None) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?)",
                       (runbook, grp, episode, flow_run_id, now(), starts_at))

    def saw_start(self, runbook: str, grp: str, starts_at: str | None) -> None:
        """Remember the newest alert start of the open episode (ISO text in UTC compares in time order)."""
        if starts_at is None:
            return
        with self._db() as db:
            db.execute("UPDATE incidents SET last_starts_at = ? WHERE runbook = ? AND grp = ? "
                       "AND (last_starts_at IS NULL OR last_starts_at < ?)", (starts_at, runbook, grp, starts_at))

    def set_member(self, inc: Incident, fingerprint: str, starts_at: str | None, firing: bool) -> bool:
        """Record an alert's state in the episode.

        Firing: the alert is (again) part of the open incident, which must hear the next
        resolution; a late re-send of a firing that already resolved changes nothing.
        Resolved: False if the alert was never seen firing in this episode."""
        key = (inc.runbook, inc.grp, inc.episode, fingerprint)
        starts_at = starts_at or ""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT starts_at, firing FROM members WHERE runbook = ? AND grp = ? AND episode = ? "
                             "AND fingerprint = ?", key).fetchone()
            if firing:
                stale = row is not None and not row["firing"] and row["starts_at"] == starts_at
                if not stale:
                    db.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?, ?, 1)", (*key, starts_at))
                    if row is None or not row["firing"]:
                        db.execute("DELETE FROM resolutions WHERE flow_run_id = ?", (inc.flow_run_id,))
                db.execute("COMMIT")
                return True
            if row is None:
                db.execute("COMMIT")
                return False
            db.execute("UPDATE members SET firing = 0 WHERE runbook = ? AND grp = ? AND episode = ? AND fingerprint = ?", key)
            db.execute("COMMIT")
            return True

    def still_firing(self, inc: Incident) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM members WHERE runbook = ? AND grp = ? AND episode = ? AND firing = 1",
                              (inc.runbook, inc.grp, inc.episode)).fetchone()[0]

    def incident_by_group(self, grp: str) -> Incident | None:
        """The newest incident any runbook opened for this group (for events that name only their group)."""
        with self._db() as db:
            row = db.execute("SELECT * FROM incidents WHERE grp = ? ORDER BY opened_at DESC LIMIT 1", (grp,)).fetchone()
        return Incident(**dict(row)) if row else None

    def resolution_delivered(self, flow_run_id: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM resolutions WHERE flow_run_id = ?", (flow_run_id,)).fetchone() is not None

    def record_resolution(self, flow_run_id: str, fingerprint: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO resolutions VALUES (?, ?, ?)", (flow_run_id, fingerprint, now()))

    # ---------------------------------------------------------------- unrouted

    def record_unrouted(self, alert: dict[str, Any], reason: str) -> None:
        line = json_line({"at": now(), "reason": reason, "alert": alert})
        with self._lock, open(self.unrouted_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def unrouted(self) -> list[dict[str, Any]]:
        if not self.unrouted_path.exists():
            return []
        return [json.loads(line) for line in self.unrouted_path.read_text(encoding="utf-8").splitlines() if line.strip()]
