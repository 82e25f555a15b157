"""Notification state that must outlive one process, under settings.state_dir/notify/.

A tiny JSON file for the Slack thread of each incident and for the questions sent
by SMS that a reply may answer: small data, rare writes, replaced atomically under
a lock. SQLite (`database`) where many processes write at once and must see each
other's writes in a transaction: the messages that asked (asked.py) and the robots'
send times (ratelimit.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from runbooks.settings import get_settings

_lock = threading.Lock()


def state_path(name: str) -> Path:
    """Where the store called `name` lives: under settings.state_dir/notify/."""
    return Path(get_settings().state_dir) / "notify" / f"{name}.json"


SQLITE_BUSY_TIMEOUT_SECONDS = 60  # how long a writer waits for another process's transaction


_connections = threading.local()


def database(name: str, schema: str) -> sqlite3.Connection:
    """This thread's connection to the SQLite file `name` under settings.state_dir/notify/, its tables created.

    Autocommit mode, so callers open their own `BEGIN IMMEDIATE` transactions: that takes the write
    lock at once, and a second process waits for it instead of failing on a stale read. Connections are
    kept open per thread (do not close them): closing the last one checkpoints the file, ~10 ms a page.
    """
    path = Path(get_settings().state_dir) / "notify" / f"{name}.sqlite"
    cache = getattr(_connections, "by_path", None)
    if cache is None:
        cache = _connections.by_path = {}
    db = cache.get(path)
    if db is None or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
        cache[path] = db
    return db


class JsonStore:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            # A damaged state file must not stop paging; start over (threads restart, old SMS asks expire).
            return {}

    def get(self, key: str, default: Any = None) -> Any:
        with _lock:
            return self.load().get(key, default)

    def update(self, key: str, fn) -> Any:
        """Replace data[key] by fn(old_value_or_None) and return the new value."""
        with _lock:
            data = self.load()
            data[key] = fn(data.get(key))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path)
            return data[key]
