"""Turning spooled alerts into incidents: exactly one per alert group and episode.

The web handlers only parse, route and spool (so the sender gets its 202 at
once and nothing accepted is lost). ``Drainer`` hands the spool to Prefect in
order, one alert at a time, in a background thread:

* firing, no incident for (runbook, group) yet -> start one (episode 1);
* firing, its incident still open (any non-final Prefect state, including
  Paused while it waits for people) -> join it, start nothing;
* firing, its incident closed, and the alert started after the newest alert
  that incident saw -> start the next episode; a re-send of the same firing
  (Alertmanager's repeat_interval) does not reopen a closed incident;
* resolved -> when it was the last of the episode's alerts still firing, hand it
  to the open incident once (``deliver_resolution``): an incident is over when
  its whole group is, not when one of several alerts clears. Each resolved alert
  is still an event related to the incident, for the timeline.

The idempotency key is (runbook, group, episode), so a replay after a crash
(started in Prefect but not yet in the ledger) gets the same flow run back.
When Prefect is unreachable the alert stays at the head of the spool and is
retried with backoff; later alerts wait behind it so order is kept.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from uuid import UUID

import httpx

from flows import launch
from integrations.alerts.model import Alert
from integrations.alerts.store import SpoolItem, Store

log = logging.getLogger("runbook.intake")


def idempotency_key(runbook: str, group: str, episode: int) -> str:
    digest = hashlib.sha256(group.encode()).hexdigest()[:24]
    return f"alert:{runbook}:{digest}:{episode}"


def utc_text(moment: datetime | None) -> str | None:
    """UTC ISO text with fixed precision, so text order is time order in the ledger."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds") if moment else None


def incident_label(alert: Alert, group: str) -> str:
    """Short human label for the run name: alert name plus a stable group tag."""
    return f"{alert.name[:60]} #{hashlib.sha256(group.encode()).hexdigest()[:6]}"


def is_transient(exc: BaseException) -> bool:
    """Errors that mean 'Prefect is not reachable right now', worth retrying forever."""
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


# ---------------------------------------------------------------- the defaults talk to Prefect
# Looked up on the module at call time, so tests can replace them.

def _start_incident(runbook_id: str, parameters: dict, **kwargs: Any) -> Any:
    return launch.start_incident(runbook_id, parameters, **kwargs)


def _deliver_resolution(flow_run_id: str, alert: dict) -> Any:
    return launch.deliver_resolution(flow_run_id, alert)


def _run_is_open(flow_run_id: str) -> bool:
    """Whether the incident is still open: its flow run is not Completed, Failed or Cancelled.

    A Crashed run is open: its process died (Prefect unreachable, a machine lost) and the escalation
    watcher sets it going again (flows/recovery.py), so a later alert of its group joins it."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return False
    return run.state is None or run.state.is_crashed() or not run.state.is_final()


def _prefect_health() -> BaseException | None:
    """None when the Prefect API answers its health check, else what went wrong."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.api_healthcheck()


def _emit(alert: Alert, outcome: str, flow_run_id: str | None, runbook: str | None) -> None:
    from prefect.events import emit_event
    from prefect.events.utilities import EventTooLarge

    related = []
    if flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"})
        related.append({"prefect.resource.id": f"runbook.incident.{flow_run_id}", "prefect.resource.role": "incident"})
    resource = {"prefect.resource.id": f"runbook.alert.{alert.fingerprint}", "prefect.resource.name": alert.name,
                "runbook.alert.source": alert.source}
    payload = {"outcome": outcome, "runbook": runbook, "alert": alert.model_dump(mode="json")}
    try:
        emit_event(f"runbook.alert.{alert.status}", resource=resource, related=related, payload=payload)
    except EventTooLarge:
        payload["alert"] = {k: v for k, v in payload["alert"].items() if k not in ("annotations", "extra")}
        emit_event(f"runbook.alert.{alert.status}", resource=resource, related=related, payload=payload)


@dataclass
class Outcome:
    what: str                       # started | joined | repeat-of-closed | resolution-delivered | ...
    flow_run_id: str | None = None

    def __str__(self) -> str:
        return f"{self.what} {self.flow_run_id}" if self.flow_run_id else self.what


class Intake:
    """Handles one spooled alert. The four hooks are Prefect by default."""

    def __init__(self, store: Store, *, start_incident: Callable | None = None, deliver_resolution: Callable | None = None,
                 run_is_open: Callable[[str], bool] | None = None, emit: Callable | None = None,
                 health: Callable[[], BaseException | None] | None = None):
        self.store = store
        self.start_incident = start_incident or _start_incident
        self.deliver_resolution = deliver_resolution or _deliver_resolution
        self.run_is_open = run_is_open or _run_is_open
        self.emit = emit or _emit
        self.health = health or _prefect_health

    def handle(self, item: dict[str, Any]) -> Outcome:
        alert = Alert.model_validate(item["alert"])
        decision = item["decision"]
        runbook = decision["runbook"]
        if decision.get("follow_group"):
            known = self.store.incident_by_group(alert.group)
            outcome, runbook = (self._follow(alert, known.runbook) if known else Outcome("no-incident")), getattr(known, "runbook", None)
        elif alert.extra.get("event_action") == "acknowledge":
            outcome = self._follow(alert, runbook)
        else:
            outcome = self._firing(alert, decision) if alert.status == "firing" else self._resolved(alert, runbook)
        try:
            self.emit(alert, outcome.what, outcome.flow_run_id, runbook)
        except Exception:  # the incident is started; a lost event must not replay it
            log.exception("could not emit the event for alert %s", alert.fingerprint)
        return outcome

    def _firing(self, alert: Alert, decision: dict[str, Any]) -> Outcome:
        runbook, group = decision["runbook"], alert.group
        starts = utc_text(alert.starts_at)
        known = self.store.incident(runbook, group)
        if known and self.run_is_open(known.flow_run_id):
            self.store.saw_start(runbook, group, starts)
            self.store.set_member(known, alert.fingerprint, starts, firing=True)
            return Outcome("joined", known.flow_run_id)
        if known and starts is not None and known.last_starts_at is not None and starts <= known.last_starts_at:
            return Outcome("repeat-of-closed", known.flow_run_id)
        episode = known.episode + 1 if known else 1
        run = self.start_incident(
            runbook, decision.get("parameters") or {},
            severity=decision.get("severity"), drill=bool(decision.get("drill")),
            idempotency_key=idempotency_key(runbook, group, episode),
            alert=alert.model_dump(mode="json"), incident=incident_label(alert, group),
        )
        run_id = str(getattr(run, "id", run))
        self.store.open_episode(runbook, group, episode, run_id, starts)
        self.store.set_member(self.store.incident(runbook, group), alert.fingerprint, starts, firing=True)
        log.info("alert %s started %s (episode %d): flow run %s", alert.name, runbook, episode, run_id)
        return Outcome("started", run_id)

    def _follow(self, alert: Alert, runbook: str) -> Outcome:
        """An event that names its group only (PagerDuty acknowledge, resolve): it never starts an incident."""
        if alert.status == "resolved":
            return self._resolved(alert, runbook)
        known = self.store.incident(runbook, alert.group)
        if known is None:
            return Outcome("acknowledged-without-incident")
        return Outcome("acknowledged" if self.run_is_open(known.flow_run_id) else "incident-closed", known.flow_run_id)

    def _resolved(self, alert: Alert, runbook: str) -> Outcome:
        known = self.store.incident(runbook, alert.group)
        if known is None:
            return Outcome("no-incident")
        if not self.run_is_open(known.flow_run_id):
            return Outcome("incident-closed", known.flow_run_id)
        if not self.store.set_member(known, alert.fingerprint, utc_text(alert.starts_at), firing=False):
            return Outcome("resolved-outside-incident", known.flow_run_id)
        if self.store.still_firing(known):
            return Outcome("partly-resolved", known.flow_run_id)
        if self.store.resolution_delivered(known.flow_run_id):
            return Outcome("resolution-already-delivered", known.flow_run_id)
        self.deliver_resolution(known.flow_run_id, alert.model_dump(mode="json"))
        self.store.record_resolution(known.flow_run_id, alert.fingerprint)
        return Outcome("resolution-delivered", known.flow_run_id)


class Drainer:
    """Background thread that empties the spool into Prefect, in order.

    ``wake()`` after appending; ``stop()`` on shutdown (what is left stays spooled
    and is drained by the next start)."""

    def __init__(self, intake: Intake, *, max_attempts: int = 3, first_delay: float = 0.5, max_delay: float = 30.0,
                 check_every: float = 30.0):
        self.intake, self.store = intake, intake.store
        self.max_attempts, self.first_delay, self.max_delay = max_attempts, first_delay, max_delay
        self.check_every = check_every  # while idle, how often Prefect's health is asked
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.prefect_reachable = False   # not known to be reachable until a check or a handed-over alert says so
        self.prefect_checked_at: datetime | None = None

    def check_prefect(self) -> bool:
        """Ask Prefect's health endpoint; what /healthz reports."""
        try:
            problem = self.intake.health()
        except Exception as exc:  # a broken client is an unreachable Prefect, not a dead drainer
            problem = exc
        self._saw_prefect(problem is None)
        if problem is not None:
            log.warning("Prefect's health check failed: %s", problem)
        return problem is None

    def _saw_prefect(self, reachable: bool) -> None:
        self.prefect_reachable = reachable
        self.prefect_checked_at = datetime.now(timezone.utc)

    def start(self) -> "Drainer":
        self._thread = threading.Thread(target=self._run, name="alert-spool-drainer", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def drain_once(self) -> bool:
        """Handle the spool's head. False when there is nothing to do or Prefect is unreachable."""
        item = self.store.next_pending()
        if item is None:
            return False
        try:
            outcome = self.intake.handle(item.item)
        except Exception as exc:
            return self._failed(item, exc)
        self._saw_prefect(True)
        self.store.finish(item.id, "done", str(outcome))
        return True

    def _failed(self, item: SpoolItem, exc: Exception) -> bool:
        if is_transient(exc):
            if self.prefect_reachable:
                log.warning("Prefect is unreachable (%s); %d alert(s) stay spooled and are retried", exc, self.store.pending_count())
            self._saw_prefect(False)
            self.store.retried(item.id, f"waiting for Prefect: {exc}")
            return False
        if item.attempts + 1 >= self.max_attempts:
            log.error("alert spool item %d failed %d times, giving up: %s", item.id, item.attempts + 1, exc)
            self.store.finish(item.id, "failed", f"{type(exc).__name__}: {exc}")
            return True
        log.warning("alert spool item %d failed (%s); will retry", item.id, exc)
        self.store.retried(item.id, f"{type(exc).__name__}: {exc}")
        return False

    def _run(self) -> None:
        delay = self.first_delay
        self.check_prefect()
        while not self._stop.is_set():
            try:
                progressed = self.drain_once()
            except Exception:  # the store itself failed (disk full?); keep the thread alive
                log.exception("alert spool drainer failed")
                progressed = False
            if progressed:
                delay = self.first_delay
                continue
            try:
                pending = self.store.pending_count() > 0
            except Exception:  # the same: an unreadable spool is retried, not the end of the drainer
                log.exception("alert spool unreadable")
                pending = True
            woken = self._wake.wait(delay if pending else self.check_every)
            self._wake.clear()
            if not woken and not pending and not self._stop.is_set():
                self.check_prefect()
            delay = min(delay * 2, self.max_delay) if pending else self.first_delay
