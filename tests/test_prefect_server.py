"""The Prefect server `runbook up` starts (app/prefect_server.py): its SQLite write transactions lock first.

Against Prefect's own SQLite configuration on a database file, as its server uses it: two requests that read and
then write at the same moment (two tracks creating their child runs) both succeed, where Prefect's own deferred
transactions fail one with "database is locked" (503 at the API, and a client that retries seconds later); and a
session opened inside a write transaction (Prefect opens some) is not made to wait for its own caller's lock.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from prefect.server.database.configurations import AioSqliteConfiguration

from app.prefect_server import sqlite_writes_lock_first


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    return AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}", timeout=5)


async def _table(config):
    engine = await config.engine()
    async with engine.begin() as conn:
        await conn.execute(sa.text("create table runs (id integer primary key, name text)"))
    return engine


async def _create_run(config, engine, name: str) -> str:
    """What create_task_run does: read (the parent's labels), then insert, in one transaction."""
    session = await config.session(engine)
    try:
        async with session:
            async with config.begin_transaction(session):
                await session.execute(sa.text("select count(*) from runs"))
                await asyncio.sleep(0.2)  # the other request reads meanwhile
                await session.execute(sa.text("insert into runs (name) values (:n)"), {"n": name})
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return str(exc).splitlines()[0]


def _two_at_once(config) -> list[str]:
    async def main():
        engine = await _table(config)
        try:
            return await asyncio.gather(_create_run(config, engine, "a"), _create_run(config, engine, "b"))
        finally:
            await engine.dispose()
    return asyncio.run(main())


def test_prefects_own_deferred_writes_fail_one_of_two_at_once(config):
    outcomes = _two_at_once(config)
    assert outcomes.count("ok") == 1 and any("database is locked" in o for o in outcomes), outcomes


def test_writes_that_lock_first_both_succeed(config):
    sqlite_writes_lock_first()
    sqlite_writes_lock_first()  # twice is once
    assert _two_at_once(config) == ["ok", "ok"]


def test_a_session_inside_a_write_transaction_does_not_wait_for_its_callers_lock(config):
    sqlite_writes_lock_first()

    async def main():
        engine = await _table(config)
        outer = await config.session(engine)
        try:
            async with outer:
                async with config.begin_transaction(outer):
                    await outer.execute(sa.text("insert into runs (name) values ('outer')"))
                    inner = await config.session(engine)  # as Prefect emits an event while it updates a work queue
                    began = time.monotonic()
                    async with inner:
                        count = (await inner.execute(sa.text("select count(*) from runs"))).scalar()
                    return count, time.monotonic() - began
        finally:
            await engine.dispose()

    count, took = asyncio.run(main())
    assert count == 0 and took < 2, (count, took)  # it reads what was committed, at once
