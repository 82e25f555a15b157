"""Turning spooled alerts into incidents: exactly one per alert group and episode.

The web handlers only parse, route and spool (so the sender gets its 202 at
once and nothing accepted is lost). ``Drainer`` hands the spool to Prefect in a
background thread, a batch of alerts at a time: each group's alerts in spool
order (firing before resolved), several groups side by side. For each alert:

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
(started in Prefect but not yet in the ledger, or handled but not yet marked
done in the spool) gets the same flow run back. When Prefect is unreachable the
alert stays pending and is retried with backoff; later alerts of its group wait
behind it so their order is kept.

Prefect is asked through one client for the intake's life (``launch.Launcher``:
deployment ids kept by name, runs created directly from the deployment),
whether the batch's incidents are open is read in one request, and the incidents
its groups' first alerts start are created together in one (``Intake.start_ahead``).
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import signal
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from uuid import UUID

import httpx

from flows import launch
from integrations.alerts.model import Alert
from integrations.alerts.store import Incident, SpoolItem, Store, connect
from tasks.client import sync_client
from tasks.inputs import prefect_away

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


def is_busy(exc: BaseException) -> bool:
    """Prefect answered, but cannot take this request now (503 while its database is locked, 429, ...): the
    alert waits, the other groups' alerts are still asked for (an unreachable Prefect stops them all)."""
    if isinstance(exc, launch.PrefectBusy):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in launch.RETRIED_ANSWERS


def dump_threads_on_signal(signum: int = getattr(signal, "SIGUSR1", 0)) -> bool:
    """``kill -USR1 <receiver pid>`` writes every thread's stack to the receiver's stderr (its log) and the
    receiver goes on: what a stuck drainer waits for. Not when the signal already has a handler."""
    try:
        if not signum or signal.getsignal(signum) not in (signal.SIG_DFL, None):
            return False
        faulthandler.register(signum, all_threads=True)
        return True
    except (AttributeError, ValueError, RuntimeError, OSError):
        return False


# ---------------------------------------------------------------- the defaults talk to Prefect

def _deliver_resolution(flow_run_id: str, alert: dict) -> Any:
    return launch.deliver_resolution(flow_run_id, alert)


def _run_is_open(flow_run_id: str) -> bool:
    """Whether the incident is still open (``launch.incident_open``), with a client of its own."""
    from prefect.exceptions import ObjectNotFound

    with sync_client() as client:
        try:
            return launch.incident_open(client.read_flow_run(UUID(flow_run_id)))
        except ObjectNotFound:
            return False


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
    """Handles one spooled alert. The hooks are Prefect by default, through one client (``launch.Launcher``).

    Whether an incident is open is asked once per batch of alerts (``read_open``), not per alert:
    within a batch (a second or so) an incident that closes meanwhile is seen as it was when the
    batch began, as if its alerts had come a moment earlier."""

    def __init__(self, store: Store, *, start_incident: Callable | None = None, deliver_resolution: Callable | None = None,
                 run_is_open: Callable[[str], bool] | None = None, emit: Callable | None = None,
                 health: Callable[[], BaseException | None] | None = None,
                 open_runs: Callable[[list[str]], set[str]] | None = None,
                 start_incidents: Callable[[str, list[dict[str, Any]]], dict[str, Any]] | None = None):
        self.store = store
        self.launcher = launch.Launcher()  # its client is opened on first use, so hooks given here never open one
        self.start_incident = start_incident or self.launcher.start_incident
        # many at once only where the default start is used (a hook given for one start is what a caller wants used)
        self.start_incidents = start_incidents or (self.launcher.start_incidents if start_incident is None else None)
        self.deliver_resolution = deliver_resolution or _deliver_resolution
        self.run_is_open = run_is_open or self.launcher.run_is_open
        self.open_runs = open_runs or (self.launcher.open_runs if run_is_open is None else None)
        self.emit = emit or _emit
        self.health = health or self.launcher.health
        self._open: dict[str, bool] = {}   # flow run id -> open, for the current batch
        self._members: dict[tuple, tuple] = {}  # (runbook, group, episode, fingerprint) -> (starts, firing) written this batch
        self._started: dict[str, Any] = {}  # idempotency key -> the run started for it ahead of the batch (start_ahead)
        self._said_bulk_failed = False

    def close(self) -> None:
        self.launcher.close()

    def read_open(self, items: list[dict[str, Any]]) -> None:
        """Before a batch: whether each incident these alerts may join is open, in one request.
        Best effort: what could not be read is asked per alert, and its error handled there."""
        self._open, self._members = {}, {}
        if self.open_runs is None:
            return
        try:
            ledger = {self._ledger_key(item) for item in items}
            run_ids = {known.flow_run_id for known in map(self._known, ledger) if known is not None}
            if run_ids:
                self._read_states(run_ids)
        except Exception as exc:
            log.debug("could not read the incidents' states ahead of the batch: %s", exc)

    def _read_states(self, run_ids: set[str]) -> None:
        """Whether each of these incidents is open, in one request (``open_runs``), kept for the batch."""
        open_ids = self.open_runs(sorted(run_ids))
        self._open.update({run_id: run_id in open_ids for run_id in run_ids})

    def start_ahead(self, heads: list[dict[str, Any]]) -> None:
        """Before a batch, after ``read_open``: the incidents the first alerts of its groups start, created together
        (``start_incidents``: one request for up to 100 runs, not one each). Each alert then takes its run in its turn,
        as if it had started it, so its outcome, its ledger write and its event are as before. Only what that turn
        would start is created (the same decision, on the same ledger and states), under the same idempotency key.
        Best effort: what is not created here is started by its alert in its turn, and its error handled there."""
        self._started = {}
        if self.start_incidents is None:
            return
        try:
            by_runbook: dict[str, list[dict[str, Any]]] = {}
            for item in heads:
                try:
                    alert, decision = Alert.model_validate(item["alert"]), item["decision"]
                except Exception:  # noqa: BLE001  (an item that cannot be read fails in its own turn)
                    continue
                if _handled_as(alert, decision) == "firing":
                    what, _, episode = self._firing_decision(alert, decision["runbook"])
                    if what == "start":
                        by_runbook.setdefault(decision["runbook"], []).append(_start_arguments(alert, decision, episode))
            if sum(map(len, by_runbook.values())) < 2:
                return  # one start: its own create, whose answer carries the run's state, is one request, not two
            for runbook, starts in by_runbook.items():
                self._started.update(self.start_incidents(runbook, starts))
            if self._started and self.open_runs is not None:  # a key may give an earlier run: its state as it is now
                self._read_states({str(run_id) for run_id in self._started.values()})
        except Exception as exc:
            if not self._said_bulk_failed and not prefect_away(exc):  # Prefect away: the lanes say so
                log.warning("could not create the batch's incidents together (%s); each alert starts its own", exc)
                self._said_bulk_failed = True

    def forget_open(self) -> None:
        """After a batch. A run created ahead that no alert took (its lane stopped early: Prefect away, the drainer
        stopping) has no ledger row yet: the next batch decides for its alert again and takes it by its key."""
        if self._started:
            log.info("%d incident(s) created ahead wait for their alerts' next try: %s", len(self._started),
                     ", ".join(str(run_id) for run_id in self._started.values()))
        self._open, self._members, self._started = {}, {}, {}

    @staticmethod
    def _ledger_key(item: dict[str, Any]) -> tuple[str | None, str]:
        """(runbook, group) of the incident an alert may join; runbook None: any runbook's (it follows its group)."""
        alert, decision = Alert.model_validate(item["alert"]), item["decision"]
        return (None if decision.get("follow_group") else decision["runbook"]), alert.group

    def _known(self, key: tuple[str | None, str]) -> Incident | None:
        runbook, group = key
        return self.store.incident_by_group(group) if runbook is None else self.store.incident(runbook, group)

    def _set_member(self, known: Incident, fingerprint: str, starts: str | None, firing: bool) -> bool:
        """``Store.set_member``, unless this batch already wrote just that for the alert: then it would change
        nothing (a group's alerts are handled by one lane, and only the drainer writes the ledger), and each
        write is a transaction of its own."""
        key, value = (known.runbook, known.grp, known.episode, fingerprint), (starts, firing)
        if self._members.get(key) == value:
            return True
        taken = self.store.set_member(known, fingerprint, starts, firing)
        if taken:
            self._members[key] = value
        return taken

    def _is_open(self, flow_run_id: str) -> bool:
        if flow_run_id not in self._open:
            self._open[flow_run_id] = self.run_is_open(flow_run_id)
        return self._open[flow_run_id]

    def handle(self, item: dict[str, Any]) -> Outcome:
        alert = Alert.model_validate(item["alert"])
        decision = item["decision"]
        runbook = decision["runbook"]
        how = _handled_as(alert, decision)
        if how == "follow-group":
            known = self.store.incident_by_group(alert.group)
            outcome, runbook = (self._follow(alert, known.runbook) if known else Outcome("no-incident")), getattr(known, "runbook", None)
        elif how == "acknowledge":
            outcome = self._follow(alert, runbook)
        else:
            outcome = self._firing(alert, decision) if how == "firing" else self._resolved(alert, runbook)
        try:
            self.emit(alert, outcome.what, outcome.flow_run_id, runbook)
        except Exception:  # the incident is started; a lost event must not replay it
            log.exception("could not emit the event for alert %s", alert.fingerprint)
        return outcome

    def _firing_decision(self, alert: Alert, runbook: str) -> tuple[str, Incident | None, int]:
        """What a firing alert does: "joined" its group's open incident, "repeat-of-closed" (what a closed one
        already had) or "start" a new episode; with the group's incident in the ledger and the episode to start."""
        known = self.store.incident(runbook, alert.group)
        if known is None:
            return "start", None, 1
        starts = utc_text(alert.starts_at)
        if self._is_open(known.flow_run_id):
            return "joined", known, known.episode
        if starts is not None and known.last_starts_at is not None and starts <= known.last_starts_at:
            return "repeat-of-closed", known, known.episode
        return "start", known, known.episode + 1

    def _firing(self, alert: Alert, decision: dict[str, Any]) -> Outcome:
        runbook, group = decision["runbook"], alert.group
        starts = utc_text(alert.starts_at)
        what, known, episode = self._firing_decision(alert, runbook)
        if what == "repeat-of-closed":
            return Outcome(what, known.flow_run_id)
        if what == "joined":
            if known.last_starts_at is None or (starts is not None and starts > known.last_starts_at):
                self.store.saw_start(runbook, group, starts)  # only when newer: each write is a transaction
            self._set_member(known, alert.fingerprint, starts, firing=True)
            return Outcome(what, known.flow_run_id)
        start = _start_arguments(alert, decision, episode)
        run = self._started.pop(start["idempotency_key"], None)
        if run is None:
            run = self.start_incident(runbook, **start)
        run_id = str(getattr(run, "id", run))
        if getattr(run, "state", None) is not None:  # the run as the server has it (the same key may give an old one)
            self._open[run_id] = launch.incident_open(run)
        self.store.open_episode(runbook, group, episode, run_id, starts)
        self._set_member(Incident(runbook, group, episode, run_id, "", starts), alert.fingerprint, starts, firing=True)
        log.info("alert %s started %s (episode %d): flow run %s", alert.name, runbook, episode, run_id)
        return Outcome("started", run_id)

    def _follow(self, alert: Alert, runbook: str) -> Outcome:
        """An event that names its group only (PagerDuty acknowledge, resolve): it never starts an incident."""
        if alert.status == "resolved":
            return self._resolved(alert, runbook)
        known = self.store.incident(runbook, alert.group)
        if known is None:
            return Outcome("acknowledged-without-incident")
        return Outcome("acknowledged" if self._is_open(known.flow_run_id) else "incident-closed", known.flow_run_id)

    def _resolved(self, alert: Alert, runbook: str) -> Outcome:
        known = self.store.incident(runbook, alert.group)
        if known is None:
            return Outcome("no-incident")
        if not self._is_open(known.flow_run_id):
            return Outcome("incident-closed", known.flow_run_id)
        if not self._set_member(known, alert.fingerprint, utc_text(alert.starts_at), firing=False):
            return Outcome("resolved-outside-incident", known.flow_run_id)
        if self.store.still_firing(known):
            return Outcome("partly-resolved", known.flow_run_id)
        if self.store.resolution_delivered(known.flow_run_id):
            return Outcome("resolution-already-delivered", known.flow_run_id)
        self.deliver_resolution(known.flow_run_id, alert.model_dump(mode="json"))
        self.store.record_resolution(known.flow_run_id, alert.fingerprint)
        return Outcome("resolution-delivered", known.flow_run_id)


def _handled_as(alert: Alert, decision: dict[str, Any]) -> str:
    """Which way ``Intake.handle`` takes an alert: follow-group, acknowledge, firing or resolved."""
    if decision.get("follow_group"):
        return "follow-group"
    if alert.extra.get("event_action") == "acknowledge":
        return "acknowledge"
    return "firing" if alert.status == "firing" else "resolved"


def _start_arguments(alert: Alert, decision: dict[str, Any], episode: int) -> dict[str, Any]:
    """``start_incident``'s arguments (after the runbook) for the episode a firing alert starts."""
    return dict(parameters=decision.get("parameters") or {}, severity=decision.get("severity"),
                drill=bool(decision.get("drill")), idempotency_key=idempotency_key(decision["runbook"], alert.group, episode),
                alert=alert.model_dump(mode="json"), incident=incident_label(alert, alert.group))


def lane_key(item: SpoolItem) -> str:
    """Alerts of one group keep their order; an item that cannot be read is a lane of its own (it fails there)."""
    try:
        return Alert.model_validate(item.item["alert"]).group
    except Exception:
        return f"spool-item:{item.id}"


@dataclass
class Result:
    """What became of one spool item in a batch."""
    item: SpoolItem
    kind: str                   # done | set-aside | retry | waiting (Prefect unreachable) | busy (Prefect busy)
    outcome: str

    @property
    def state(self) -> str | None:
        """The spool row's new state; None keeps it pending."""
        return {"done": "done", "set-aside": "failed"}.get(self.kind)


class SpoolBatches:
    """The drainer's reads and writes of the spool (Store's table), many rows at a time.

    Store reads and writes a row per call; here a batch of pending alerts is read at once and what became of
    them written in one transaction (synchronous=FULL, as Store appends: few commits, and its flush of the log
    covers the ledger writes before it, so a done mark never outlives them). One connection for the drainer's
    life, shared by its lanes under a lock.
    A row is marked done only after its alert was handled; a process that dies before leaves it
    pending, to be handled again (the same idempotency key gives the same run)."""

    def __init__(self, store: Store):
        self.store = store
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.store.path, self.store.busy_timeout, durable=True, check_same_thread=False)
        return self._db

    def pending(self, limit: int) -> list[SpoolItem]:
        with self._lock:
            rows = self._connection().execute("SELECT * FROM spool WHERE state = 'pending' ORDER BY id LIMIT ?",
                                              (limit,)).fetchall()
        return [SpoolItem(r["id"], r["received_at"], json.loads(r["item"]), r["attempts"]) for r in rows]

    def record(self, results: list[Result]) -> None:
        if not results:
            return
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                for r in results:
                    db.execute("UPDATE spool SET state = COALESCE(?, state), outcome = ?, attempts = attempts + 1 "
                               "WHERE id = ?", (r.state, r.outcome, r.item.id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()


class Drainer:
    """Background thread that empties the spool into Prefect.

    It takes up to ``batch`` pending alerts at a time and hands each group's alerts over in spool
    order (firing before resolved), up to ``lanes`` groups side by side: across groups order does
    not matter, each is its own incident. An alert that cannot be handed over holds back the later
    alerts of its group only; they are tried again together after a backoff.

    What the lanes that have finished did is written to the spool every ``record_every`` seconds while
    others still run: a lane that waits long for Prefect does not hold back the marks of the groups
    handed over beside it.

    ``wake()`` after appending; ``stop()`` on shutdown (what is left stays spooled
    and is drained by the next start)."""

    def __init__(self, intake: Intake, *, max_attempts: int = 3, first_delay: float = 0.5, max_delay: float = 30.0,
                 check_every: float = 30.0, batch: int = 200, lanes: int = 4, record_every: float = 2.0,
                 busy_delay: float = 4.0):
        self.intake, self.store = intake, intake.store
        self.spool = SpoolBatches(intake.store)
        self.max_attempts, self.first_delay, self.max_delay = max_attempts, first_delay, max_delay
        self.check_every = check_every  # while idle, how often Prefect's health is asked
        self.batch, self.lanes, self.record_every = batch, lanes, record_every
        self.busy_delay = busy_delay     # the longest backoff while Prefect answers but is busy (it is there: ask soon)
        self.only_busy = False           # the last drain()'s alerts that were not handed over all met a busy Prefect
        self._pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = 0                 # alerts handled (or set aside) by the last drain()
        self.prefect_reachable = False   # not known to be reachable until a check or a handed-over alert says so
        self.prefect_checked_at: datetime | None = None
        self._said_unreachable = False   # the warning was logged; the next handed-over alert logs that Prefect is back

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
        dump_threads_on_signal()
        self._thread = threading.Thread(target=self._run, name="alert-spool-drainer", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        stuck = False
        if self._thread:
            self._thread.join(timeout)
            stuck = self._thread.is_alive()
        if stuck:
            log.warning("the alert spool drainer did not stop within %.0f s; its unfinished alerts stay spooled", timeout)
        if self._pool:
            self._pool.shutdown(wait=not stuck, cancel_futures=True)  # a lane stuck in a call must not hold the exit
            self._pool = None
        self.spool.close()
        self.intake.close()

    def drain_once(self) -> bool:
        """Handle the spool's head alone. False when there is nothing to do or it waits to be tried again."""
        return self.drain(1)

    def drain(self, limit: int | None = None) -> bool:
        """Handle up to ``limit`` (default ``batch``) pending alerts. True when every one was handled or set
        aside; False when there was nothing to do or one waits to be tried again (Prefect unreachable or busy)."""
        self.handled, self.only_busy = 0, False
        items = self.spool.pending(limit or self.batch)
        if not items:
            return False
        lanes: dict[str, list[SpoolItem]] = {}
        for item in items:
            lanes.setdefault(lane_key(item), []).append(item)
        halt = threading.Event()  # set when Prefect is unreachable: the other lanes stop asking
        self.intake.read_open([item.item for item in items])
        self.intake.start_ahead([lane[0].item for lane in lanes.values()])
        try:
            if self.lanes > 1 and len(lanes) > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="alert-drain-lane")
                results = self._record_as_lanes_finish([self._pool.submit(self._lane, lane, halt) for lane in lanes.values()])
            else:
                results = [r for lane in lanes.values() for r in self._lane(lane, halt)]
                self.spool.record(results)
        finally:
            self.intake.forget_open()
        self.handled = sum(r.kind in ("done", "set-aside") for r in results)
        waiting = [r for r in results if r.kind == "waiting"]
        self.only_busy = not waiting and any(r.kind == "busy" for r in results)
        if any(r.kind == "done" for r in results):
            if self._said_unreachable:
                log.warning("Prefect answers again: %d alert(s) handed over, %d still spooled", self.handled,
                            self.store.pending_count())
                self._said_unreachable = False
            self._saw_prefect(True)
        elif waiting:
            if self.prefect_reachable or not self._said_unreachable:
                log.warning("Prefect is unreachable (%s); %d alert(s) stay spooled and are retried",
                            waiting[0].outcome, self.store.pending_count())
                self._said_unreachable = True
            self._saw_prefect(False)
        return all(r.kind in ("done", "set-aside") for r in results)

    def _record_as_lanes_finish(self, lanes: list[Future]) -> list[Result]:
        """Each lane's results, written to the spool (one transaction for all the lanes finished by then) every
        ``record_every`` seconds while others still run, and once more when the last one is done."""
        results: list[Result] = []
        running = set(lanes)
        try:
            while running:
                finished, running = wait(running, timeout=self.record_every)
                got = [r for lane in lanes if lane in finished for r in lane.result()]
                self.spool.record(got)
                results.extend(got)
        finally:
            for lane in running:  # a lane that raised (not an alert's error: those are results) ends the batch
                lane.cancel()
        return results

    def _lane(self, items: list[SpoolItem], halt: threading.Event) -> list[Result]:
        """One group's alerts in order; the first that fails holds back the rest (they stay pending as they are)."""
        results = []
        for item in items:
            if halt.is_set() or self._stop.is_set():
                break
            try:
                results.append(Result(item, "done", str(self.intake.handle(item.item))))
            except Exception as exc:
                results.append(self._failed(item, exc))
                if results[-1].kind == "waiting":
                    halt.set()
                if results[-1].kind != "set-aside":
                    break
        return results

    def _failed(self, item: SpoolItem, exc: Exception) -> Result:
        if is_busy(exc):
            return Result(item, "busy", f"Prefect is busy: {exc}")
        if prefect_away(exc):
            return Result(item, "waiting", f"waiting for Prefect: {exc}")
        if item.attempts + 1 >= self.max_attempts:
            log.error("alert spool item %d failed %d times, giving up: %s", item.id, item.attempts + 1, exc)
            return Result(item, "set-aside", f"{type(exc).__name__}: {exc}")
        log.warning("alert spool item %d failed (%s); will retry", item.id, exc)
        return Result(item, "retry", f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        delay = self.first_delay
        self.check_prefect()
        while not self._stop.is_set():
            try:
                progressed = self.drain()
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
            # a round that handed some alerts over starts the backoff afresh; one that handed none over doubles it,
            # up to busy_delay when Prefect answered that it is busy
            if pending and not self.handled:
                delay = min(delay * 2, self.busy_delay if self.only_busy else self.max_delay)
            else:
                delay = self.first_delay
