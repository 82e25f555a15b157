"""The Prefect server `runbook up` starts (app/prefect_server.py) begins every SQLite write transaction IMMEDIATE."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from prefect.server.database.configurations import SQLITE_BEGIN_MODE, AioSqliteConfiguration

from app.prefect_server import sqlite_writes_lock_first


class Session:
    """Stands in for SQLAlchemy's session: notes the BEGIN mode the transaction would open with."""

    def __init__(self):
        self.modes = []

    @asynccontextmanager
    async def begin(self):
        self.modes.append(SQLITE_BEGIN_MODE.get())
        yield self


def test_every_sqlite_write_transaction_takes_the_write_lock_first(monkeypatch):
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    config = AioSqliteConfiguration.__new__(AioSqliteConfiguration)
    session = Session()

    async def write(with_for_update: bool = False):
        async with config.begin_transaction(session, with_for_update=with_for_update):
            pass

    asyncio.run(write())
    assert session.modes == ["DEFERRED"]  # Prefect's own: a create_task_run that loses the race fails with 503
    sqlite_writes_lock_first()
    sqlite_writes_lock_first()  # twice is once
    asyncio.run(write())
    asyncio.run(write(with_for_update=True))
    assert session.modes == ["DEFERRED", "IMMEDIATE", "IMMEDIATE"]
