"""One incident while it runs: the context every step receives.

Its parameters, grade, answers, clock and journal. The flow, its parallel tracks
(child flow runs in threads) and the time-rule watcher share one `Incident`;
everything they learn goes through `record()`, which keeps the journal, logs it
and posts it as a Prefect event (tasks/journal.py) so the timeline can be rebuilt from Prefect's history.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from prefect.settings import PREFECT_UI_URL

from integrations.contacts import Directory, Person
from integrations.localtime import local_time
from integrations.notify import Delivery, Message, deliver
from integrations.site import Site
from runbooks.expressions import evaluate, is_plain, render
from runbooks.model import Runbook, Text
from runbooks.settings import get_settings
from runbooks.workdays import CHINA
from tasks.client import sync_client
from tasks.inputs import create_once, read_input
from tasks.journal import JOURNAL, Entry

logger = logging.getLogger("runbook.incident")

NOT_MEETING = ("skipped", "failed", "expired", "rejected")  # a step that ended so did not do what a deadline asks


def finish_on_record(inputs: dict[str, str] | None, step_id: str) -> datetime | None:
    """A step's first finish as an earlier attempt kept it (`once-finished-<step>`), from a read of the run's inputs."""
    raw = (inputs or {}).get(f"once-finished-{step_id}")
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        logger.warning("the first finish of %s on record is not a time: %r", step_id, raw)
        return None


class IncidentEnded(Exception):
    """Raised to stop the main line: an end step, a rejection or an expiry that ends the incident."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def plan_clock(value: datetime | str | None) -> datetime | None:
    """A drill's clock as the run's parameters carry it (ISO text or a datetime); China time if it names no zone."""
    if value is None or value == "":
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=CHINA)


def _plain_utc(moment: datetime) -> datetime:
    """The moment as a plain UTC datetime. Prefect hands out its own DateTime (pendulum's), whose arithmetic goes
    through a deprecation wrapper: the incident's clock is read on every step, so it keeps a plain one."""
    at = moment.astimezone(timezone.utc)
    return datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, tzinfo=timezone.utc)


class Incident:
    def __init__(self, runbook: Runbook, *, params: dict[str, Any], severity: str | None, drill: bool,
                 time_scale: float, auto: bool, answers: dict[str, Any], alert: dict | None,
                 flow_run_id: str, directory: Directory, site: Site, label: str | None = None,
                 run_url: str | None = None, started: datetime | None = None, clock: datetime | None = None):
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.runbook = runbook
        self.params = params
        self.severity_override = severity
        self.severity = severity or (runbook.severity.default if runbook.severity else None)
        self.severity_reason: str | None = "set by hand" if severity else None
        self.drill = drill
        self.time_scale = time_scale
        self.auto = auto
        self.answers = answers
        self.alert = alert
        self.id = flow_run_id
        self.label = label
        self.directory = directory
        self.site = site
        self.run_url = run_url
        # The run's own start: a run that restarts (a crashed worker, a suspended wait) keeps its clock.
        self.started = _plain_utc(started) if started else datetime.now(timezone.utc)
        # The plan's clock at that start: the same unless a drill says what time it plays (`--clock`), so that a
        # "same day" or "working day" deadline does not depend on when the drill happens to run.
        self.clock = plan_clock(clock) or self.started
        self.steps: dict[str, dict[str, Any]] = {}
        self.finished_at: dict[str, datetime] = {}
        # The steps a threshold or deadline starts from (`start: step:<id>`), is met by, or is stopped by (`until_step`)
        self.timed_steps = {rule.start[5:] for rule in [*runbook.thresholds, *runbook.deadlines] if rule.start.startswith("step:")}
        self.timed_steps |= {dl.met_by for dl in runbook.deadlines if dl.met_by}
        self.timed_steps |= {th.until_step for th in runbook.thresholds if th.until_step}
        self.journal: list[Entry] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        # Called as fn(step_id, result) after each step's result is set (the progress artifact listens here).
        self.on_result: list = []
        # The time rules this run has settled (fired, cancelled, met, missed), and what is still to come:
        # [{"what", "at", "claim"}], asked when a wait suspends so the escalation watcher can wake the run in time.
        self.rules_done: set[str] = set()
        self.upcoming: Callable[[], list[dict[str, Any]]] = lambda: []
        # True in the attempt that started the incident (it won the `started` claim): no step can have acted before
        # it, so an acting step need not look for its record first (tasks/steps.py).
        self.first_attempt = False
        # In a later attempt, the steps an earlier one recorded done (tasks/records.py done_steps_in): the others
        # need not look for a record before they act. None: unknown, each looks.
        self.done_steps: set[str] | None = None
        # The incident run's inputs as this attempt began ({} in the attempt that started it; None: unknown): a wait
        # replays its earlier asks from here instead of asking the server again (tasks/people.py replay).
        self.inputs_at_start: dict[str, str] | None = None

    def done_before(self, step_id: str) -> bool | None:
        """Whether an earlier attempt recorded the step done: False in the attempt that started the incident, else
        what the attempt read as it began (`done_steps`); None when that is unknown (the step looks for its record)."""
        if self.first_attempt:
            return False
        return None if self.done_steps is None else step_id in self.done_steps

    # ---- time

    def seconds(self, span: timedelta) -> float:
        """Real seconds for a span of plan time, after --time-scale."""
        return span.total_seconds() / self.time_scale

    def plan_time(self, real: datetime) -> datetime:
        """The plan's clock at a real moment of this run: its clock at the start plus the scaled time since."""
        return self.clock + (real - self.started) * self.time_scale

    def real_time(self, plan: datetime) -> datetime:
        """The real moment this run's plan clock shows `plan`."""
        return self.started + (plan - self.clock) / self.time_scale

    def plan_elapsed(self) -> timedelta:
        """Plan time since the start (real time multiplied by the time scale)."""
        return (datetime.now(timezone.utc) - self.started) * self.time_scale

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the incident closes first; True if it closed."""
        return self.closed.wait(seconds)

    # ---- expressions

    def context(self, **extra: Any) -> dict[str, Any]:
        return {
            "params": self.params,
            "severity": self.severity,
            "steps": self.steps,
            "alert": self.alert or {},
            "incident": {
                "id": self.id, "runbook": self.runbook.id, "drill": self.drill, "label": self.label,
                "started": local_time(self.started, self.site.time_zone),  # read by people: drafted reports, pages
                "elapsed_minutes": round(self.plan_elapsed().total_seconds() / 60, 1),
                "severity_label": self.level_label(), "run_url": self.run_url,
            },
            **extra,
        }

    def holds(self, condition: str | None, **extra: Any) -> bool:
        return True if not condition else evaluate(condition, self.context(**extra))

    def text(self, text: Text | None, language: str = "zh", **extra: Any) -> str:
        if text is None:
            return ""
        source = text.get(language)
        return source if is_plain(source) else render(source, self.context(**extra))  # most titles: no context to build

    def both(self, text: Text | None, **extra: Any) -> str:
        if text is None:
            return ""
        zh, en = self.text(text, "zh", **extra), self.text(text, "en", **extra)
        return zh if zh == en else f"{zh}\n{en}"

    @property
    def run_tags(self) -> list[str]:
        """The tags of the incident's flow runs (its own and its tracks'): how the runs list and the answer API find its runbook."""
        return [f"runbook:{self.runbook.id}"] + (["drill"] if self.drill else [])

    def level_label(self) -> str | None:
        level = self.runbook.level(self.severity) if self.severity else None
        return level.label.both() if level else self.severity

    # ---- state

    def set_result(self, step_id: str, record: dict[str, Any]) -> None:
        at = self._finish_time(step_id, record)
        with self._lock:
            self.steps[step_id] = record
            self.finished_at[step_id] = at
        for listener in list(self.on_result):
            try:
                listener(step_id, record)
            except Exception as exc:  # an observer never stops the incident
                logger.debug("on_result listener failed: %s", exc)

    def _finish_time(self, step_id: str, record: dict[str, Any]) -> datetime:
        """When the step finished. A step that a time rule counts from, is met or stopped by keeps the time of the attempt
        that first finished it: a resumed attempt replays it now, and the rule's clock must not restart."""
        if step_id in self.timed_steps and record.get("status") not in NOT_MEETING:
            # read as this attempt began, if an earlier one finished it; else asked of the server
            return finish_on_record(self.inputs_at_start, step_id) or self.first_time(f"finished-{step_id}")
        return datetime.now(timezone.utc)

    def record(self, kind: str, text: str = "", *, step: str | None = None, actor: str | None = None, **data: Any) -> Entry:
        entry = Entry(kind=kind, step=step, actor=actor, text=text, data=data)
        with self._lock:
            self.journal.append(entry)
        logger.info("[%s] %s%s%s", kind, f"{step}: " if step else "", text, f" (by {actor})" if actor else "")
        JOURNAL.send(self.id, self.runbook.id, entry, drill=self.drill)
        return entry

    def claim(self, name: str, unsure: bool | None = True) -> bool | None:
        """True the first time this run does `name`; False when an earlier attempt of the run already did;
        `unsure` when the server could not say (by default True: a page twice rather than never).

        Time rules fire beside the main line as plain calls, not cached tasks, so a run that restarts
        would page again without this. The claim is a flow run input, which the server keeps once per key.
        """
        try:
            with sync_client() as client:
                return create_once(client, self.id, f"once-{name}", datetime.now(timezone.utc).isoformat())
        except Exception as exc:
            logger.warning("could not record that %s happened (%s); doing it anyway", name, exc)
            return unsure

    def first_time(self, name: str) -> datetime:
        """When this incident first got to `name`, over every attempt of its run (kept on the flow run, `once-<name>`)."""
        now = datetime.now(timezone.utc)
        try:
            with sync_client() as client:
                if create_once(client, self.id, f"once-{name}", now.isoformat()):
                    return now
                raw = read_input(client, self.id, f"once-{name}")
            return datetime.fromisoformat(raw) if raw else now
        except Exception as exc:  # Prefect unreachable: this attempt's own time is the best there is
            logger.warning("could not read when %s first happened (%s); counting from now", name, exc)
            return now

    # ---- people

    def people(self, roles: list[str]) -> list[Person]:
        """Who gets a page for these roles: the role holders, or the drill recipients in a drill."""
        if self.drill and self.directory.drill_recipients:
            return self.directory.drill_people()
        return self.directory.holders(roles)

    def may_answer(self, roles: list[str]) -> list[Person]:
        """Who may answer a step for these roles; in a drill the drill recipients, who get its pages, may too."""
        people = self.directory.holders(roles)
        if self.drill and roles:
            people += [p for p in self.directory.drill_people() if p not in people]
        return people

    def page(self, roles: list[str], text: str, *, step: str | None, title: str | None = None,
             answer_options: list[str] | None = None) -> list[Delivery]:
        """Send a message to the people of these roles and record every attempt. Never silent."""
        people = self.people(roles)
        message = Message(
            incident_id=self.id, runbook_id=self.runbook.id, step_id=step, drill=self.drill,
            title=title or f"{self.runbook.title.zh} {self.runbook.title.en}", text=text,
            severity=self.level_label(), run_url=self.run_url,
            needs_answer=bool(answer_options), answer_options=answer_options or [],
        )
        if not people:
            self.record("page.failed", f"nobody holds the roles {', '.join(roles)}", step=step, roles=roles)
            return []
        started = time.monotonic()
        deliveries = deliver(message, people)
        for d in deliveries:
            self.record(f"page.{d.outcome}", f"{d.channel} → {d.person}" + (f": {d.error}" if d.error else ""),
                        step=step, actor="runbook", channel=d.channel, person=d.person, outcome=d.outcome,
                        error=d.error, attempt=d.attempt, roles=roles, queued_seconds=d.queued_seconds)
        reached = {d.person for d in deliveries if d.outcome == "sent"}
        missed = [p.id for p in people if p.id not in reached]
        if missed:
            self.record("page.unreached", f"could not reach {', '.join(missed)} on any channel", step=step, people=missed)
        logger.debug("paged %d people in %.2fs", len(people), time.monotonic() - started)
        return deliveries


def runbook_of(tags) -> str | None:
    """The runbook an incident's flow run is tagged with (`runbook:<id>`, Incident.run_tags), or None."""
    return next((tag.split(":", 1)[1] for tag in tags or [] if tag.startswith("runbook:")), None)


def run_url(flow_run_id: str) -> str | None:
    """Link to a run in the Prefect UI."""
    base = get_settings().ui_url
    if not base:
        try:
            base = PREFECT_UI_URL.value()
        except Exception:
            base = None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def alert_summary(alert: dict[str, Any], default: str = "alert") -> str:
    """What an alert (the normalised `Alert` as JSON) is about, in one line: its summary annotation, else its name."""
    annotations, labels = alert.get("annotations") or {}, alert.get("labels") or {}
    return str(annotations.get("summary") or labels.get("alertname") or default)
