"""Where the steps that act keep their done records, and the thread that writes them.

A step that acts is done once per incident (tasks/steps.py: step_task): Prefect persists its result through
the result storage `StepRecords`, which keeps it as the input `done-<step>` of the incident's flow run on the
Prefect server, so every worker sees it whatever its disk. The records are written by one thread per process
(`WRITER`), in the order handed over, so a step does not wait for the server; the flow flushes it at every way
out of the incident, and the flush sends the run's records still waiting at once, beside the writer's request
under way. Records handed over faster than the server takes them (quick steps one after another) go together,
several steps' in one input `done--<hex>` (a step id never starts with a dash): one request, not one a step.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Callable
from uuid import UUID, uuid4

from prefect.context import SettingsContext, SyncClientContext, get_settings_context
from prefect.filesystems import WritableFileSystem
from prefect.settings import PREFECT_API_URL

from tasks.client import sync_client
from tasks.inputs import create_once, inputs_under, prefect_away, read_input, while_away

logger = logging.getLogger("runbook.records")


class StepRecords(WritableFileSystem):
    """Prefect result storage kept on the Prefect server: a step's result is an input of its incident's flow run.

    Prefect stores a result under its cache key, "<flow run id>:<step id>" (tasks/steps.py: step_task);
    here that is the input `done-<step id>` of that run, or an entry of a batch `done--<hex>` the writer
    wrote for several steps at once. Every worker sees it whatever its own disk, a recovered incident that
    lands on another machine finds its finished steps Cached, and the record goes with the run. The first
    record of a step stays (the server keeps one value per key; a process hands each step's over once).
    """

    _block_type_name = "Runbook step records"
    _block_type_slug = "runbook-step-records"
    _description = "Results of the steps that act, kept as inputs of the incident's flow run on the Prefect server."

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        if path in _records_read:  # Prefect reads a cached step's record twice (does it exist, then read it)
            return _records_read[path]
        run_id, step_id = _split(path)
        with sync_client() as client:
            value = done_record(client, run_id, step_id)
        if value is None:
            raise FileNotFoundError(path)
        record = _keep_record(path, value)
        if record is None:
            raise FileNotFoundError(f"{path}: not a JSON step record")
        return record

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        """Handed to this process's `WRITER`: the next step goes on while the record travels (see `Writer`)."""
        with _handed_lock:
            _handed.setdefault(path, content.decode())  # the first record of a step stays, as on the server
        WRITER.handed()
        WRITER.later(lambda client: write_handed(client, path))
        return path


# The done records handed to the writer and not yet written, by path ("<flow run id>:<step id>"); those written in
# another step's batch, until their own job comes by; and those a flush is writing this moment (`write_run_now`),
# which their jobs wait for. The lock keeps the threads that meet here apart: the step's, which hands a record over;
# the writer's, which takes its run's records out together; and a flushing one's.
_handed: dict[str, str] = {}
_batched: set[str] = set()
_in_flight: set[str] = set()
_handed_lock = threading.Lock()
_landed = threading.Condition(_handed_lock)  # a flush's write came back

BATCH = "done--"  # the key of an input that holds several steps' records: `done--<hex>`


def write_handed(client, path: str) -> bool:
    """Write a step's done record now if it is still waiting in the writer (a job ahead of its own may take it:
    tasks/steps.py _marked), with every other record of its run handed over meanwhile: one input for them all.
    True when the record is on the server (now, or in an earlier write); False when none was handed over."""
    run_id, _ = _split(path)
    with _handed_lock:
        while path in _in_flight:  # a flush is writing it: what it comes back with decides
            _landed.wait()
        if path in _batched:
            _batched.discard(path)
            return True
        value = _handed.pop(path, None)
        if value is None:
            return False
        others = _take_run(run_id)
    try:
        _write_records(client, run_id, {path: value, **others})
    except Exception:
        with _handed_lock:  # the others' own jobs try again, each for its own record; this one is lost, as before
            for p, v in others.items():
                _handed.setdefault(p, v)
        raise
    with _handed_lock:
        _batched.update(others)
    return True


def _take_run(run_id: str) -> dict[str, str]:
    """Take every record of a run out of `_handed` (the caller holds `_handed_lock`)."""
    return {p: _handed.pop(p) for p in [p for p in _handed if p.startswith(f"{run_id}:")]}


def write_run_now(client, run_id: str) -> None:
    """Write a run's records handed over and not yet written, now, in one input: from a flush, beside the request
    the writer has under way, so that the run's last records do not wait for that request to come back first.

    Each of them still has its own job in the writer's queue (a record is taken out of `_handed` only by a write):
    while this write is under way those jobs wait for it; once it is on the server they find it written; if it
    fails, the records are handed back and their jobs write them, with the settings they were handed over under."""
    with _handed_lock:
        taken = _take_run(run_id)
        _in_flight.update(taken)
    if not taken:
        return
    written = False
    try:
        _write_records(client, run_id, taken)
        written = True
    finally:
        with _handed_lock:
            _in_flight.difference_update(taken)
            if written:
                _batched.update(taken)
            else:
                for path, value in taken.items():
                    _handed.setdefault(path, value)
            _landed.notify_all()


def _write_run_now(run_id: str) -> None:
    try:
        context = SyncClientContext.get()
        if context is not None and context.client is not None:
            # the run's client, open for the run's life: used as it is, not entered again from this second thread
            # (its count of users is not kept for two threads; the flush may stop waiting while this one still writes)
            write_run_now(context.client, run_id)
            return
        with sync_client() as client:
            write_run_now(client, run_id)
    except Exception as exc:  # noqa: BLE001  (handed back: the writer's jobs write them)
        logger.warning("could not write the run's last records at once (%s); the writer does", exc)


def _write_records(client, run_id: str, records: dict[str, str]) -> None:
    """One input for a run's records: `done-<step>` for one, a batch `done--<hex>` for several."""
    if len(records) == 1:
        (path, value), = records.items()
        create_once(client, UUID(run_id), f"done-{_split(path)[1]}", value)
        return
    batch = {_split(p)[1]: v for p, v in records.items()}
    create_once(client, UUID(run_id), f"{BATCH}{uuid4().hex[:16]}", json.dumps(batch))  # once: the client may send it twice


def done_record(client, run_id, step_id: str) -> str | None:
    """A step's done record on the server, raw, on its own or in a batch; None when it has none."""
    value = read_input(client, run_id, f"done-{step_id}")
    if value is None:
        value = _records_in(inputs_under(client, run_id, BATCH)).get(step_id)
    return value


def _records_in(found: dict[str, str]) -> dict[str, str]:
    """Step id -> raw record, from a run's `done-` inputs: a step's own, and the batches'."""
    records: dict[str, str] = {}
    for key, value in found.items():
        if not key.startswith(BATCH):
            records.setdefault(key.removeprefix("done-"), value)
            continue
        try:
            batch = json.loads(value)
        except ValueError:
            continue
        if isinstance(batch, dict):
            for step_id, record in batch.items():
                if isinstance(record, str):
                    records.setdefault(step_id, record)
    return records


def _split(path: str) -> tuple[str, str]:
    """A record's path, "<flow run id>:<step id>" (Prefect's cache key of the step), as (run id, step id)."""
    run_id, _, step_id = path.partition(":")
    return run_id, step_id


# The step records this process has read, by path: only records found (one not there yet may be written any moment).
_records_read: dict[str, bytes] = {}


def _keep_record(path: str, value: str) -> bytes | None:
    """A done record as Prefect reads it, kept for the process (a record, once there, never changes: the first stays).

    SECURITY: a record names its own serializer, and whoever may write a run's inputs could write one that says
    pickle; only JSON records are read (step_task writes JSON), anything else counts as none."""
    try:
        serializer = json.loads(value)["metadata"]["serializer"]["type"]
    except (ValueError, KeyError, TypeError):
        serializer = None
    if serializer != "json":
        return None
    if len(_records_read) > 1000:
        _records_read.clear()
    record = _records_read[path] = value.encode()
    return record


def done_steps_in(run_id: str, found: dict[str, str]) -> set[str]:
    """The steps with a done record among a run's inputs (their records kept for Prefect's cache lookups).

    What is not there as an attempt begins was not done by an earlier attempt: only this attempt's process writes the
    run's records from here on (a second process on one incident is what recovery prevents), so those steps need not
    look."""
    done = {k: v for k, v in found.items() if k.startswith("done-")}
    return {step_id for step_id, value in _records_in(done).items()
            if _keep_record(f"{run_id}:{step_id}", value) is not None}


STEP_RECORDS = "incident-runs"  # the one block document of StepRecords that every task names


def step_records() -> StepRecords:
    """The saved StepRecords block of this process's server (Prefect asks a task's result storage to be saved).

    Read once per process, before its first step that acts. If Prefect is away then (down, restarting, busy), the
    step waits for it, asking again every few seconds: an incident must not fail because Prefect was away."""
    return while_away(load_step_records, "the step waits for it before it acts, to keep its record there", logger)


def load_step_records() -> StepRecords:
    """The block of this process's server, read (or saved) at its first use; no waiting while Prefect is away."""
    return _step_records(PREFECT_API_URL.value())


REGISTER_TRIES = 6


@functools.lru_cache
def _step_records(api_url: str | None) -> StepRecords:
    """Load the block, or save it when this server has none yet. Incidents that start together on a new server all
    save it at once, and a save can fail on what another is registering before that one's block is there to load:
    each tries again a moment later (else a burst on a new server failed one incident in five at its first action)."""
    for attempt in range(REGISTER_TRIES):
        try:
            return StepRecords.load(STEP_RECORDS)
        except ValueError:  # not on this server yet: the first process saves it
            pass
        try:
            records = StepRecords()
            records.save(STEP_RECORDS, overwrite=True)
            return records
        except Exception as exc:  # noqa: BLE001  (another process is registering it at the same moment)
            if prefect_away(exc):
                raise
            time.sleep(0.1 * 2 ** attempt)
    return StepRecords.load(STEP_RECORDS)  # the other's by now, or its error says what is wrong


MARK_GRACE_SECONDS = 0.3  # how long a step's began mark waits for the step's done record to take its place


class Writer:
    """One thread per process that writes a run's records to the server in the order they were handed over.

    A step that acts hands over its done record (and its began mark) and goes on, instead of waiting
    ~70 ms for the server each time. What is handed over is written before the process lets its run go:
    `flush()` at every way out of the incident's flow (a suspended wait, the end, an error). A process
    killed before then loses the records not yet written: those steps act again on the next attempt and
    the journal says so (`step.interrupted`), as when a process dies between acting and recording.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child starts a thread of its own, its locks free

    def _reset(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()  # a record handed over, or a flush begun (mark_unless_done waits on it)
        self._hurry = 0  # flushes under way
        self._marks_waiting = 0  # mark jobs waiting for their step's record (mark_unless_done)
        global _handed_lock, _landed
        _handed.clear()  # a forked child writes only its own run's records
        _batched.clear()
        _in_flight.clear()
        _handed_lock = threading.Lock()  # one held by another thread at the fork would stay held in the child
        _landed = threading.Condition(_handed_lock)

    def mark_unless_done(self, path: str, mark: Callable[[Any], Any]) -> None:
        """A step begins: write its done record in its began mark's place if it is done within MARK_GRACE_SECONDS
        of its start, else `mark(client)` then. A quick step costs the server one write, not two; a long one is marked a moment
        after it began. `flush()` cuts the grace short (the process is about to let its run go).
        Only for the attempt that started its incident (tasks/steps.py _marked): no earlier mark can be there."""
        until = time.monotonic() + MARK_GRACE_SECONDS  # from the step's start, not from when the writer gets to it:
        # marks of steps that begin together (parallel tracks) wait out one moment between them, not one each

        def job(client) -> None:
            with self._changed:
                self._marks_waiting += 1
                try:
                    self._changed.wait_for(lambda: path in _handed or path in _batched or self._hurry,
                                           max(0.0, until - time.monotonic()))
                finally:
                    self._marks_waiting -= 1
            write_handed(client, path) or mark(client)

        self.later(job)

    def handed(self) -> None:
        """A record was handed over: a mark waiting for it goes now (none waits while the writer is behind)."""
        with self._changed:
            if self._marks_waiting:
                self._changed.notify_all()

    def later(self, job: Callable[[Any], Any]) -> None:
        """Run `job(client)` on the writer thread, after every job handed over before it, with the Prefect
        settings of the caller (a warm run may run under settings of its own: app/warm.py)."""
        settings = get_settings_context()
        with self._idle:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(self._jobs,), daemon=True, name="run-records")
                self._thread.start()
            self._pending += 1
        self._jobs.put((settings.profile, settings.settings, job))

    def flush(self, timeout: float = 60.0, run: str | None = None) -> bool:
        """Wait until every job handed over so far is done; False if some were still left after `timeout`.

        Given the `run` that is being let go, its records still waiting go at once (`write_run_now`), from a thread
        of the flush's own with the caller's settings and client, beside the request the writer may have under way;
        the flush waits for that write within the same `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._hurry += 1
            self._changed.notify_all()
        try:
            prefix = f"{run}:"
            if run is not None and any(path.startswith(prefix) for path in list(_handed)):
                now = threading.Thread(target=contextvars.copy_context().run, args=(_write_run_now, run),
                                       daemon=True, name="run-records-now")
                try:
                    now.start()
                except RuntimeError as exc:  # no thread to be had: the writer's own jobs write them
                    logger.warning("could not write the run's last records at once (%s); the writer does", exc)
                else:
                    now.join(max(0.0, deadline - time.monotonic()))
            with self._idle:
                while self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        logger.warning("%d run records not yet written to the server after %g s", self._pending, timeout)
                        return False
                    self._idle.wait(left)
            return True
        finally:
            with self._changed:
                self._hurry -= 1

    def _run(self, jobs: queue.Queue) -> None:
        client, bound_to = None, None  # one client for the process's records, made again if the settings change
        while True:
            profile, settings, job = jobs.get()
            try:
                if settings is not bound_to:
                    if client is not None:
                        client.__exit__(None, None, None)
                    with SettingsContext(profile=profile, settings=settings):
                        client = sync_client().__enter__()
                    bound_to = settings
                job(client)
            except Exception as exc:  # the server unreachable after the client's own retries: the record is lost
                logger.warning("could not write a run record to the server: %s", exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


WRITER = Writer()
