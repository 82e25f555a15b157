"""The Prefect server `runbook up` starts: Prefect's own `prefect server start`, with our settings and one SQLite fix.

    python -m app.prefect_server --host 127.0.0.1 --port 4200     (any `prefect server start` option)

The fix. On SQLite, Prefect opens most writing requests with a deferred transaction (`BEGIN DEFERRED`): the
transaction reads first and takes the write lock only at its first write. When two such requests run at once, both
read, and the one that writes second cannot wait for the lock (SQLite would deadlock), so it fails at once with
"database is locked". Prefect answers 503 and its client tries again after 2, 4, 8... seconds. Two tracks of a
parallel step create their child runs at the same moment, and so do incidents that start together: one of each pair
lost seconds, and a drill's "side by side" tracks ran one after the other (measured: four tracks that each take
0.2 s ended after 2.6 to 8.7 s). Prefect's own comment in `setup_sqlite` names the cure, and its state-setting
requests already use it: `BEGIN IMMEDIATE`, which takes the write lock first, so a second writer waits in SQLite's
busy timeout (60 s) instead of failing. Here every writing transaction on SQLite does. Reads open no transaction
and are untouched; PostgreSQL is untouched.
"""

from __future__ import annotations

import os
import sys

from flows.server import SERVER_SETTINGS


def sqlite_writes_lock_first() -> None:
    """Make every transaction Prefect's server begins on SQLite a `BEGIN IMMEDIATE` one."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    begin = AioSqliteConfiguration.begin_transaction
    if getattr(begin, "locks_first", False):
        return

    def begin_transaction(self, session, with_for_update: bool = False):
        return begin(self, session, with_for_update=True)

    begin_transaction.locks_first = True
    AioSqliteConfiguration.begin_transaction = begin_transaction


def main(argv: list[str]) -> None:
    for key, value in SERVER_SETTINGS.items():
        os.environ.setdefault(key, value)
    sqlite_writes_lock_first()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
