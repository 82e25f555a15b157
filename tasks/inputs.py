"""Flow run inputs: the small records an incident keeps on its flow run in the Prefect server.

Everything that must outlive the run's process lives here: the forms people answer
(Prefect's own keyset `paused-<pause key>-response|schema|description`), who may
answer a wait (`...-who`), an explicit expiry (`...-expired`), things done once
(`once-<name>`), the done records of steps that act (`done-<step>`, through the result
storage `StepRecords`) and the resolution of the alert that started the incident.

A pause key is `<step-id>-<n>`: the step that waits and the number of the ask
(a refused answer makes the step ask again under `n + 1`). Prefect names a
keyset after the state, so a suspended wait's inputs start `suspended-`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

import httpx

from prefect.context import SettingsContext, get_settings_context
from prefect.client.schemas.filters import FlowFilter, FlowFilterId, FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import WritableFileSystem
from prefect.settings import PREFECT_API_URL

from tasks.client import sync_client

logger = logging.getLogger("runbook.inputs")

RESOLUTION_KEY = "alert-resolved"
KEYSET_PREFIXES = ("paused", "suspended")  # Prefect's keyset starts with the state's name


def pause_key(step_id: str, ask: int) -> str:
    return f"{step_id}-{ask}"


def step_of(key: str | None) -> str | None:
    """The step of a pause key `<step-id>-<n>` (a key without an ask number is taken whole)."""
    if not key:
        return None
    step, _, ask = key.rpartition("-")
    return step if step and ask.isdigit() else key


def ask_of(key: str | None) -> int | None:
    """The ask number of a pause key, or None."""
    _, _, ask = (key or "").rpartition("-")
    return int(ask) if ask.isdigit() else None


NEXT_DUE = "next due "  # in a suspended wait's state message: when its first timer is due, so a watcher reads no more


def next_due_message(timers: list[dict]) -> str:
    """The state message of a suspended wait: `next due <ISO time>`, or `no timer`."""
    times = [datetime.fromisoformat(t["at"]) for t in timers]
    return NEXT_DUE + min(times).isoformat() if times else "no timer"


def next_due(message: str | None) -> datetime | None:
    """When a suspended wait's first timer is due, from its state message; None when the message does not say."""
    if message and message.startswith(NEXT_DUE):
        try:
            return datetime.fromisoformat(message[len(NEXT_DUE):])
        except ValueError:
            return None
    return None


def ask_base(step_id: str, ask: int, prefix: str = "paused") -> str:
    """`paused-<step>-<n>`: what every input of one ask starts with."""
    return f"{prefix}-{pause_key(step_id, ask)}"


def ask_key(step_id: str, ask: int, part: str, prefix: str = "paused") -> str:
    """`paused-<step>-<n>-<part>`: one input of one ask (part: who, response, expired, schema, description)."""
    return f"{ask_base(step_id, ask, prefix)}-{part}"


def base_of(keyset: dict) -> str:
    """The base of a paused state's keyset (`paused-<step>-<n>` or `suspended-<step>-<n>`)."""
    return keyset["response"].removesuffix("-response")


def who_key(keyset: dict) -> str:
    """The input that says which step waits and who may answer it, so any client can check without the runbook."""
    return base_of(keyset) + "-who"


def already_exists(exc: Exception) -> bool:
    """Whether creating an input failed because the key is taken (the server answers 409)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 409
    return "409" in str(exc) or "already exists" in str(exc).lower()


def prefect_away(exc: BaseException) -> bool:
    """Whether an error means Prefect cannot be asked right now (down, restarting, busy), not that the answer is no."""
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and prefect_away(cause)


def read_input(client, run_id, key: str) -> str | None:
    """An input's raw value, or None when there is none (the sync client raises a 404 status error, not ObjectNotFound)."""
    try:
        return client.read_flow_run_input(flow_run_id=run_id, key=key)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _not_found(exc: Exception) -> bool:
    """Whether a client call failed for want of the thing (the sync client raises a 404 status error, not ObjectNotFound)."""
    return isinstance(exc, ObjectNotFound) or (isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 404)


def inputs_under(client, run_id, prefix: str) -> dict[str, str]:
    """Every input of the run whose key starts with `prefix`, raw, in one request."""
    found = client.filter_flow_run_input(flow_run_id=run_id, key_prefix=prefix, limit=10_000, exclude_keys=set())
    return {i.key: i.value for i in found if i.key.startswith(prefix)}  # the server matches with LIKE: `_` is a wildcard


def earlier_track_runs(client, run) -> list[UUID]:
    """If this run is a parallel track's, the earlier runs of the same track of the same incident, oldest first.

    Prefect carries a track's run over to the next attempt of its incident only while the task run that
    tracks it has not ended; after a crash the next attempt starts the track in a new run, and the answers
    given in the track are inputs of the earlier one. No request for an incident's own run (it has no parent).
    """
    if run.parent_task_run_id is None:
        return []
    parent = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    parents = [parent.id, *earlier_track_runs(client, parent)]  # a track inside a track: its parent ran again too
    siblings = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)),
                                     flow_filter=FlowFilter(id=FlowFilterId(any_=[run.flow_id])), limit=200)
    return [r.id for r in sorted(siblings, key=lambda r: r.created) if r.id != run.id and r.created < run.created]


def read_json(client, run_id, key: str) -> Any:
    """An input decoded from JSON, or None when there is none or it is not JSON."""
    raw = read_input(client, run_id, key)
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


def read_dated(client, run_id, key: str) -> tuple[Any, Any] | None:
    """(created, decoded value) of an input, or None: when something was handed to the run matters to the timeline."""
    found = [i for i in client.filter_flow_run_input(flow_run_id=run_id, key_prefix=key, limit=5, exclude_keys=set())
             if i.key == key]
    if not found:
        return None
    try:
        return found[0].created, json.loads(found[0].value)
    except ValueError:
        return None


def create_once(client, run_id, key: str, value: str) -> bool:
    """Create an input unless the key exists; True when this call created it (the server keeps one value per key)."""
    try:
        client.create_flow_run_input(flow_run_id=run_id, key=key, value=value)
        return True
    except Exception as exc:
        if already_exists(exc):
            return False
        raise


def put_input(client, run_id, key: str, value: str, *, exists: bool = False) -> None:
    """Create or replace an input (inputs cannot be updated in place). `exists`: the caller knows the key is there (a
    wait's record it has just read), so the delete comes first and the create that would be refused is spared."""
    if exists:
        try:
            client.delete_flow_run_input(flow_run_id=run_id, key=key)
        except Exception as exc:  # gone already: the create below makes it
            if not _not_found(exc):
                raise
    if not create_once(client, run_id, key, value):
        client.delete_flow_run_input(flow_run_id=run_id, key=key)
        client.create_flow_run_input(flow_run_id=run_id, key=key, value=value)


def mark_expired(client, run_id, base_key: str, reason: str) -> None:
    """The explicit expiry marker `<base key>-expired` (base key: `paused-<step>-<n>`) that a replaying run takes as expiry."""
    create_once(client, run_id, f"{base_key}-expired", reason)


def deliver_resolution(flow_run_id: UUID | str, alert: dict[str, Any]) -> None:
    """Hand a resolved alert to its incident (a check step with alert_resolved waits for this); the first one counts."""
    with sync_client() as client:
        create_once(client, UUID(str(flow_run_id)), RESOLUTION_KEY, json.dumps(alert, default=str))


def read_resolution(flow_run_id: UUID | str) -> dict | None:
    """The resolution delivered to the run, or None while there is none."""
    with sync_client() as client:
        return read_json(client, UUID(str(flow_run_id)), RESOLUTION_KEY)


class StepRecords(WritableFileSystem):
    """Prefect result storage kept on the Prefect server: a step's result is an input of its incident's flow run.

    Prefect stores a result under its cache key, "<flow run id>:<step id>" (tasks/steps.py: step_task);
    here that is the input `done-<step id>` of that run. Every worker sees it whatever its own disk,
    a recovered incident that lands on another machine finds its finished steps Cached, and the
    record goes with the run. The first record of a step stays (the server keeps one value per key).
    """

    _block_type_name = "Runbook step records"
    _block_type_slug = "runbook-step-records"
    _description = "Results of the steps that act, kept as inputs of the incident's flow run on the Prefect server."

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        if path in _records_read:  # Prefect reads a cached step's record twice (does it exist, then read it)
            return _records_read[path]
        run_id, key = _done_key(path)
        with sync_client() as client:
            value = read_input(client, run_id, key)
        if value is None:
            raise FileNotFoundError(path)
        record = _keep_record(path, value)
        if record is None:
            raise FileNotFoundError(f"{path}: not a JSON step record")
        return record

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        """Handed to this process's `WRITER`: the next step goes on while the record travels (see `Writer`)."""
        run_id, key = _done_key(path)
        value = content.decode()
        WRITER.later(lambda client: create_once(client, run_id, key, value))
        return path


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


def read_done_steps(run_id: str) -> set[str] | None:
    """The steps of a run that have a done record, read in one request as an attempt starts (their records kept for
    Prefect's cache lookups); None if the server could not say (each step then looks for its own record).

    What is not there now was not done by an earlier attempt: only this attempt's process writes the run's records
    from here on (a second process on one incident is what recovery prevents), so those steps need not look."""
    try:
        with sync_client() as client:
            found = inputs_under(client, run_id, "done-")
    except Exception as exc:  # noqa: BLE001  (the slower way still works)
        logger.warning("could not read the done steps of %s (%s); each step looks for its own record", run_id, exc)
        return None
    return {key.removeprefix("done-") for key, value in found.items()
            if _keep_record(f"{run_id}:{key.removeprefix('done-')}", value) is not None}


STEP_RECORDS = "incident-runs"  # the one block document of StepRecords that every task names


def _done_key(path: str) -> tuple[UUID, str]:
    run_id, _, step_id = path.partition(":")
    return UUID(run_id), f"done-{step_id}"


def step_records() -> StepRecords:
    """The saved StepRecords block of this process's server (Prefect asks a task's result storage to be saved).

    Read once per process, before its first step that acts. If Prefect is away then (down, restarting, busy), the
    step waits for it, asking again every few seconds: an incident must not fail because Prefect was away."""
    delay = 1.0
    while True:
        try:
            return _step_records(PREFECT_API_URL.value())
        except Exception as exc:
            if not prefect_away(exc):
                raise
            logger.warning("Prefect is away (%s): the step waits for it before it acts, to keep its record there", exc)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


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

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every job handed over so far is done; False if some were still left after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning("%d run records not yet written to the server after %g s", self._pending, timeout)
                    return False
                self._idle.wait(left)
        return True

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
