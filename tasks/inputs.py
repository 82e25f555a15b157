"""Flow run inputs: the small records an incident keeps on its flow run in the Prefect server.

Everything that must outlive the run's process lives here: the forms people answer
(Prefect's own keyset `paused-<pause key>-response|schema|description`), who may
answer a wait (`...-who`), an explicit expiry (`...-expired`), things done once
(`once-<name>`), the done records of steps that act (`done-<step>`, or several steps' in a
batch `done--<hex>`, written through the result storage of tasks/records.py) and the resolution of the alert that started the incident.

A pause key is `<step-id>-<n>`: the step that waits and the number of the ask
(a refused answer makes the step ask again under `n + 1`). Prefect names a
keyset after the state, so a suspended wait's inputs start `suspended-`.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any, Callable, TypeVar
from uuid import UUID

import httpx

from prefect.client.schemas.filters import FlowFilter, FlowFilterId, FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.exceptions import ObjectNotFound

from tasks.client import sync_client

T = TypeVar("T")

RESOLUTION_KEY = "alert-resolved"
KEYSET_PREFIXES = ("paused", "suspended")  # Prefect's keyset starts with the state's name


INPUTS_READ_LIMIT = 10_000  # the most inputs one request asks for (the server gives the oldest first)
INPUTS_MOST = 30_000  # past this many, a next request would leave out more keys than one query may bind (32766)


class TooManyInputs(RuntimeError):
    """A run has more inputs under a prefix than can be read whole (INPUTS_MOST)."""


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


def while_away(call: Callable[[], T], waiting: str, log: logging.Logger, *, only: type[BaseException] = Exception) -> T:
    """`call()`, asked again 1, 2, 4 ... 15 s apart while it fails (with an `only` error) because Prefect is away,
    with a warning saying what waits ("Prefect is away (<error>): <waiting>"); any other error is raised."""
    delay = 1.0
    while True:
        try:
            return call()
        except only as exc:
            if not prefect_away(exc):
                raise
            log.warning("Prefect is away (%s): %s", exc, waiting)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


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
    """Every input of the run whose key starts with `prefix`, raw: one request, and one more for each
    INPUTS_READ_LIMIT found, leaving out the keys already read (the server gives the oldest first, so a single
    request would miss the newest). Raises TooManyInputs past INPUTS_MOST rather than return a part as the whole."""
    read: dict[str, str] = {}
    while True:
        limit = min(INPUTS_READ_LIMIT, INPUTS_MOST - len(read) + 1)  # one past the most: is there more?
        page = client.filter_flow_run_input(flow_run_id=run_id, key_prefix=prefix, limit=limit, exclude_keys=set(read))
        fresh = {i.key: i.value for i in page if i.key not in read}
        if len(read) + len(fresh) > INPUTS_MOST:
            raise TooManyInputs(f"flow run {run_id} has more than {INPUTS_MOST} inputs under {prefix!r}; they cannot "
                                "be read whole (a run with this many claims and answers wakes far too often: look at its "
                                "reminders and escalation)")
        read.update(fresh)
        if len(page) < limit:
            return {k: v for k, v in read.items() if k.startswith(prefix)}  # the server matches with LIKE: `_` is a wildcard
        if not fresh:
            raise RuntimeError(f"the Prefect server gave the same inputs of flow run {run_id} again when asked for the "
                               "rest: it does not leave out `exclude_keys`")


def read_run_inputs(run_id) -> dict[str, str] | None:
    """Every input of a run, read as a later attempt begins (its steps' done records, its waits' earlier asks and
    answers; one request unless there are over INPUTS_READ_LIMIT); None if the server could not say or they are too
    many to read whole (each step then looks for what it needs)."""
    try:
        with sync_client() as client:
            found = inputs_under(client, run_id, "")
    except Exception as exc:  # noqa: BLE001  (the slower way still works)
        logging.getLogger("runbook.inputs").warning("could not read the inputs of %s (%s); each step looks for its own",
                                                    run_id, exc)
        return None
    return found


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
