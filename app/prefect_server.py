"""The Prefect server `runbook up` starts: Prefect's own `prefect server start`, with our settings and one SQLite fix.

    python -m app.prefect_server --host 127.0.0.1 --port 4200     (`prefect server start`'s options)

The API and its services run in this one process (`prefect server start` in the foreground with one worker, its
default); `--background` or `--workers N` would start them in processes of their own, without the fix.

The fix. On SQLite, Prefect opens most writing requests with a deferred transaction (`BEGIN DEFERRED`): the
transaction reads first and takes the write lock only at its first write. When two such requests run at once, both
read, and the one that writes second cannot wait for the lock (SQLite would deadlock), so it fails at once with
"database is locked". Prefect answers 503 and its client tries again after 2, 4, 8... seconds. Two tracks of a
parallel step create their child runs at the same moment, and so do incidents that start together: one of each pair
lost seconds, and a drill's "side by side" tracks ran one after the other (measured: four tracks that each take
0.2 s ended after 2.6 to 8.7 s). Prefect's own comment in `setup_sqlite` names the cure, and its state-setting
requests already use it: `BEGIN IMMEDIATE`, which takes the write lock first, so a second writer waits in SQLite's
busy timeout (60 s) instead of failing. Here every transaction Prefect begins on SQLite does (they are its writes,
and a few reads that want one consistent view); the reads that open none, and PostgreSQL, are untouched.
"""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager



def command(host: str, port: int) -> list[str]:
    """How to start it (a subprocess). Importing this module imports no Prefect: the tests start their server
    through it before anything may import Prefect (it reads its settings at import)."""
    return [sys.executable, "-m", "app.prefect_server", "--host", host, "--port", str(port)]


def sqlite_writes_lock_first() -> None:
    """Make every transaction Prefect's server begins on SQLite a `BEGIN IMMEDIATE` one.

    Only the transaction itself: a session opened inside it (Prefect opens some, e.g. to emit an event while it
    updates a work queue) begins as Prefect would begin it. Were it IMMEDIATE too, it would wait for the lock its
    own caller holds until SQLite's busy timeout ran out."""
    from prefect.server.database.configurations import SQLITE_BEGIN_MODE, AioSqliteConfiguration

    if getattr(AioSqliteConfiguration.begin_transaction, "locks_first", False):
        return

    @asynccontextmanager
    async def begin_transaction(self, session, with_for_update: bool = False):
        token = SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                await session.connection()  # BEGIN IMMEDIATE goes out now, while the mode says so
                SQLITE_BEGIN_MODE.set("IMMEDIATE" if with_for_update else "DEFERRED")  # Prefect's, for sessions inside
                yield transaction
        finally:
            SQLITE_BEGIN_MODE.reset(token)

    begin_transaction.locks_first = True
    AioSqliteConfiguration.begin_transaction = begin_transaction


def main(argv: list[str]) -> None:
    from flows.server import SERVER_SETTINGS  # imports Prefect, which command()'s callers must not import yet
    from prefect.context import refresh_global_settings_context

    for key, value in SERVER_SETTINGS.items():
        os.environ.setdefault(key, value)  # a setting given in the environment wins (e.g. a test's control)
    refresh_global_settings_context()  # flows.server imported Prefect, which read its settings before these
    sqlite_writes_lock_first()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
