"""What every step kind shares: the registry of how each kind runs, and a step as a Prefect task run.

Each kind's module registers its `run(incident, step, walk)` with `@runs("kind")`;
`walk(incident, steps)` is the interpreter, handed in for the kinds that hold steps
of their own (branch, approval, parallel, waits with an expiry branch).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.context import SettingsContext, TaskRunContext, get_settings_context
from prefect.exceptions import ObjectNotFound

from runbooks.model import KINDS, StepBase
from tasks.client import sync_client
from tasks.incident import Incident
from tasks.inputs import create_once, read_input, while_away
from tasks.records import WRITER, step_records

logger = logging.getLogger("runbook.steps")

Walk = Callable[[Incident, list], None]
Handler = Callable[[Incident, Any, Walk], dict]

HANDLERS: dict[str, Handler] = {}
BESIDE: dict[str, Callable[[Incident, Any], dict]] = {}  # kinds that may run inside a time rule, as plain calls


class StepFailed(Exception):
    """A step failed and its policy says the incident ends as failed."""


def runs(kind: str) -> Callable[[Handler], Handler]:
    """Register how the steps of one kind run."""
    if kind not in KINDS:
        raise ValueError(f"'{kind}' is not a step kind of the language (runbooks/model.py)")

    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


def runs_beside(kind: str) -> Callable[[Callable[[Incident, Any], dict]], Callable[[Incident, Any], dict]]:
    """Register how a kind runs inside a threshold or deadline: a plain call beside the main line, no task run."""
    if not KINDS[kind].in_time_rules:
        raise ValueError(f"the language does not let a {kind} step run inside a time rule (runbooks/model.py)")

    def register(fn: Callable[[Incident, Any], dict]) -> Callable[[Incident, Any], dict]:
        BESIDE[kind] = fn
        return fn

    return register


def step_task(step: StepBase, fn: Callable[..., Any], inc: Incident | None = None):
    """A task run named after the step, with the step's retries and timeout.

    Given `inc`, a kind that acts on the world is done once per incident: its result is persisted under
    "<flow run id>:<step id>" on the Prefect server (tasks/records.py: StepRecords), so a run that starts again
    from the top (a suspended wait resumed, a crashed run recovered, on this machine or another) finds it
    Cached instead of acting twice. The record is written once the step has acted, by the process's record
    writer (the next step does not wait for it; the flow flushes it before its process lets the run go): a
    process that dies in between leaves the step to act again, and the journal says so (`step.interrupted`).
    Each failed try is on the incident's journal (`step.try-failed`, with its error), whatever the log level.
    """
    if inc is not None:
        fn = _journaled(fn, step, inc)
    if inc is not None and step.acts_once:
        key = f"{inc.id}:{step.id}"
        fn = _marked(fn, step, inc)
        once: dict[str, Any] = dict(cache_key_fn=lambda context, parameters: key, persist_result=True,
                                    result_storage=step_records(), result_serializer="json",
                                    # nothing to find in the attempt that started the incident, nor for a step
                                    # no earlier attempt recorded done: such a step only records
                                    refresh_cache=inc.done_before(step.id) is False)
        if step.kind == "action":  # `prefect concurrency-limit create site:<name> N` bounds actions at one site
            once["tags"] = site_tags(inc.site.name)
    else:
        once = dict(cache_policy=NO_CACHE, persist_result=False)
    made = task(fn, name=step.id, task_run_name=step.id, **once,
                retries=getattr(step, "retries", 0), retry_delay_seconds=getattr(step, "retry_delay", timedelta()).total_seconds(),
                timeout_seconds=step.timeout.total_seconds() if getattr(step, "timeout", None) else None)
    return _WaitsForItsSlot(made)


class _WaitsForItsSlot:
    """A step task whose call waits while Prefect is away when asked for a slot of its tags (the site's limit, or a
    tag the caller's context adds: the engine clears those, but a task run asks for every tag it has).

    Prefect asks for the slots before the step's function runs and raises ConcurrencySlotAcquisitionError when it
    cannot be asked (the cause: a connection refused, a 503): the step has not acted, so it asks again, 1, 2, 4... 15 s
    apart, rather than fail the incident because Prefect was restarting. A task without tags asks for nothing.
    """

    def __init__(self, made):
        self.task = made

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return while_away(lambda: self.task(*args, **kwargs), f"step {self.task.name} waits to ask for its slots again",
                          logger, only=ConcurrencySlotAcquisitionError)


SITE_LIMIT_CHECK_SECONDS = 30.0
SITE_LIMIT_AHEAD_JOIN_SECONDS = 5.0  # how long a first action waits for the lookup begun with its run
_site_limited: dict[str, tuple[float, bool]] = {}  # site name -> (when looked up, a tag limit exists)
_looking_ahead: dict[str, threading.Thread] = {}  # site name -> its lookup begun as the run started (site_limit_ahead)
_looking_lock = threading.Lock()


def _forget_lookups() -> None:
    global _looking_lock
    _looking_ahead.clear()  # a forked child has none of its parent's threads, and its lock is free
    _looking_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_lookups)


def site_tags(site: str) -> list[str]:
    """`["site:<site>"]` when a concurrency limit of that tag exists (docs/production.md), else no tag.

    Prefect asks the server for a slot of every tag a task run has, and gives it back after: two calls
    a step, limit or not. So the tag goes only where a limit is, looked up at most every 30 s by each
    process; a limit created during an incident applies within that. While Prefect is away the lookup waits for
    it; a lookup that fails otherwise adds the tag, so a limit is never skipped.
    """
    tag = f"site:{site}"
    with _looking_lock:
        ahead = _looking_ahead.get(site)
    if ahead is not None and ahead is not threading.current_thread() and _stale(_site_limited.get(site)):
        ahead.join(SITE_LIMIT_AHEAD_JOIN_SECONDS)  # the lookup begun with the run is on its way: its answer, not a second ask
    checked = _site_limited.get(site)
    if _stale(checked):
        checked = _site_limited[site] = (time.monotonic(), _site_limit_exists(tag))
    return [tag] if checked[1] else []


def _stale(checked: tuple[float, bool] | None) -> bool:
    """Whether a site's looked-up answer is missing or older than SITE_LIMIT_CHECK_SECONDS."""
    return checked is None or time.monotonic() - checked[0] > SITE_LIMIT_CHECK_SECONDS


def site_limit_ahead(site: str) -> None:
    """Look the site's limit up in a thread of its own while the run starts, so that its first action finds the
    answer: a run's process (forked, or resumed after a wait) starts with none, and the lookup was 0.05 s on the way
    to the first step. An action that comes while the lookup is on its way waits for its answer (up to
    SITE_LIMIT_AHEAD_JOIN_SECONDS, then looks it up itself) rather than asking the server a second time."""
    if not _stale(_site_limited.get(site)):
        return
    settings = get_settings_context()  # the run's (its API, key, TLS), not the process's first ones

    def look_up() -> None:
        try:
            with SettingsContext(profile=settings.profile, settings=settings.settings):
                site_tags(site)
        finally:
            with _looking_lock:
                if _looking_ahead.get(site) is thread:
                    del _looking_ahead[site]

    with _looking_lock:  # started before it is shown, so that whoever finds it may join it
        earlier = _looking_ahead.get(site)
        if earlier is not None and earlier.is_alive():
            return
        thread = threading.Thread(target=look_up, daemon=True, name=f"site-limit-{site}")
        thread.start()
        _looking_ahead[site] = thread


def _site_limit_exists(tag: str) -> bool:
    """Whether a concurrency limit of the tag exists. While Prefect is away the step waits for it to say: a tag
    added on a guess would have Prefect ask it for a slot it cannot give, and fail the incident for that."""
    def ask() -> bool:
        try:
            with sync_client() as client:
                client.read_concurrency_limit_by_tag(tag)
            return True
        except ObjectNotFound:
            return False

    try:
        return while_away(ask, f"the step waits for it to say whether {tag} has a limit", logger)
    except Exception:  # noqa: BLE001
        return True  # an answer that cannot be read: the tag goes, so a limit is never skipped


def _journaled(fn: Callable[..., Any], step: StepBase, inc: Incident) -> Callable[..., Any]:
    @functools.wraps(fn)  # Prefect reads the task's parameters from the signature
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            inc.record("step.try-failed", f"{type(exc).__name__}: {exc}"[:500], step=step.id, error=type(exc).__name__)
            raise

    return run


def _marked(fn: Callable[..., Any], step: StepBase, inc: Incident) -> Callable[..., Any]:
    """Mark the step begun (`began-<step>`, this task run's id) as it acts, beside it rather than before it.

    A later attempt of the run that finds the mark of another task run, and no done record (else it
    would be Cached), knows an earlier process died while the step acted: it acts again, erring on
    the side of doing it twice rather than never, and puts that on the journal for the responders.
    The mark goes to the process's record writer (tasks/records.py: WRITER), so the action does not wait
    for the server; a process that dies before it is written leaves no mark, and its next attempt acts
    again unannounced. In the attempt that started the incident no earlier mark can be there to find, so
    the writer gives the step a moment (records.MARK_GRACE_SECONDS) and, when it is done by then, writes its
    done record in the mark's place instead (it says more, and lands sooner): a quick step costs one write, not
    two, and the writer does not fall behind quick steps.
    """
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        this = str(TaskRunContext.get().task_run.id)
        if inc.first_attempt:
            WRITER.mark_unless_done(f"{inc.id}:{step.id}", lambda client: create_once(client, inc.id, f"began-{step.id}", this))
        else:
            WRITER.later(lambda client: _mark_begun(client, inc, step, this))
        return fn(*args, **kwargs)

    return run


def _mark_begun(client, inc: Incident, step: StepBase, this: str) -> None:
    mark = f"began-{step.id}"
    earlier = None if create_once(client, inc.id, mark, this) else read_input(client, inc.id, mark)
    if earlier not in (None, this):
        inc.record("step.interrupted", "an earlier attempt began this step and died before recording it done; "
                   "it runs again, so its action may have reached the far side twice", step=step.id)


def note(step: StepBase, inc: Incident, record: dict[str, Any]) -> dict[str, Any]:
    """Record a decision or an answer as the step's own task run, so every step shows in the UI."""

    def noted(summary: dict[str, Any]) -> dict[str, Any]:
        return summary

    return step_task(step.model_copy(update={"retries": 0, "timeout": None}), noted)(plain(record))


def summary(result: dict[str, Any]) -> str:
    """A step's result in one line for the journal."""
    shown = {k: v for k, v in result.items() if k not in ("status", "text", "waited_seconds")}
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:500]


def plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}
