"""The interpreter: run a runbook's steps inside a Prefect flow run.

Control flow only: walk the steps, skip those whose condition is false, hand
each to its kind (tasks/kinds.py: one module per kind), and apply the step's
failure policy. The time rules run beside it (flows/time_rules.py); what the
incident leaves behind is written by flows/record/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext, TagsContext
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from flows.record.progress import flush_progress, follow_progress
from flows.record.publish import publish_incident
from flows.time_rules import missed_first, recall_finishes, settle_at_close, start_thread, upcoming, watch_time_rules
from integrations.contacts import load_directory
from integrations.localtime import site_zone
from integrations.site import load_site
from runbooks.model import Choice, FormField, ManualStep, Runbook, Text
from runbooks.parameters import ParameterError, validate_parameters
from runbooks.settings import get_settings
from tasks.client import sync_client
from tasks.incident import Incident, IncidentEnded, alert_summary, run_url
from tasks.inputs import read_run_inputs
from tasks.journal import JOURNAL
from tasks.records import WRITER, done_steps_in
from tasks.kinds import HANDLERS
from tasks.people import ask
from tasks.steps import StepFailed, plain, site_limit_ahead, summary

# How an incident ended -> the name of the run's final state.
OUTCOMES = {"resolved": "Completed", "rejected": "Rejected", "expired": "Expired", "failed": "Failed"}


def run_incident(runbook: Runbook, *, parameters: dict | None, severity: str | None, drill: bool, time_scale: float,
                 auto: bool, answers: dict | None, incident: str | None, alert: dict | None,
                 clock: datetime | None = None):
    """Body of every runbook flow. Returns the run's final state, named after the outcome."""
    run_id = str(FlowRunContext.get().flow_run.id)
    settings = get_settings()
    if severity is not None and runbook.level(severity) is None:
        levels = ", ".join(lv.id for lv in runbook.severity.levels) if runbook.severity else "none (this runbook is not graded)"
        return Failed(message=f"severity '{severity}' is not a level of {runbook.id}; levels: {levels}")
    try:
        params = validate_parameters(runbook, parameters or {})
    except ParameterError as exc:
        return Failed(message=str(exc))
    ignored_clock, clock = (clock, None) if clock is not None and not drill else (None, clock)  # a real incident's
    # deadlines fall on the real calendar: a clock is for drills (`runbook run --drill --clock`)
    inc = Incident(runbook, params=params, severity=severity, drill=drill, time_scale=time_scale, auto=auto,
                   answers=answers or {}, alert=alert, flow_run_id=run_id, label=incident,
                   directory=load_directory(settings.contacts_file), site=load_site(settings.site_file),
                   run_url=run_url(run_id), started=_run_started(FlowRunContext.get().flow_run), clock=clock)
    if any(step.kind == "action" for step, _ in runbook.all_steps()):
        site_limit_ahead(inc.site.name)
    if severity is None and runbook.severity and runbook.severity.before_grading == "none":
        inc.severity = None  # no level until a grade step gives one (runbooks/model.py Severity.before_grading)
    started = inc.claim("started", unsure=None)
    # only a claim the server granted proves no attempt acted before: an unsure one looks for step records
    inc.first_attempt = started is True
    if inc.first_attempt:
        inc.inputs_at_start = {}  # no earlier attempt: no record, no ask of a wait
    else:  # one read for every step's record and every wait's earlier asks, instead of one or more per step
        inc.inputs_at_start = read_run_inputs(inc.id)
        inc.done_steps = None if inc.inputs_at_start is None else done_steps_in(inc.id, inc.inputs_at_start)
        if inc.inputs_at_start is not None:
            recall_finishes(inc, inc.inputs_at_start)  # before the time rules' watcher starts
    if started is not False:
        inc.record("incident.started", runbook.title.both() + (" [DRILL]" if drill else ""),
                   actor="alert" if alert else "runbook", params=plain(params), drill=drill, time_scale=time_scale,
                   severity=inc.severity, label=incident, clock=clock.isoformat() if clock else None,
                   clock_ignored=f"{ignored_clock.isoformat()}: not a drill" if ignored_clock else None)
        if alert:
            inc.record("alert.received", alert_summary(alert), actor="alert", alert=alert)
    else:  # the same incident again: a suspended wait resumed, or a crashed run recovered; it replays what it did
        inc.record("incident.resumed", "the run goes on from where it was (answers replayed, done steps cached)", actor="runbook")
    inc.upcoming = lambda: upcoming(inc)
    follow_progress(inc)
    watcher = start_thread(lambda: watch_time_rules(inc), name=f"time-rules-{run_id}")
    outcome, message = "resolved", "every step done"
    try:
        # the steps' task runs carry no tags (the run has them): Prefect asks the server for a concurrency
        # slot for every tag of a task run before it starts, one more call per step, seconds when it is busy
        with TagsContext(current_tags=set()):
            run_steps(inc, runbook.steps)
    except IncidentEnded as end:
        outcome, message = end.outcome, end.message
    except StepFailed as exc:
        outcome, message = "failed", str(exc)
    except BaseException:
        flush_progress(inc)  # the process goes (a suspended wait): the progress bar drawn first
        raise
    finally:
        inc.closed.set()
        watcher.join(timeout=30)
        JOURNAL.flush()  # a step's start still held a moment (tasks/journal.py) goes before the process ends
        WRITER.flush(run=inc.id)  # the steps' done records are on the server before anything else may run the incident
    settle_at_close(inc)
    inc.record("incident.closed", message, actor="runbook", outcome=outcome)
    publish_incident(inc, outcome, message)
    if outcome == "failed":
        return Failed(message=message, name=OUTCOMES[outcome])
    return Completed(message=message, name=OUTCOMES[outcome])


def _run_started(run: FlowRun) -> datetime | None:
    """When this flow run first started running; the same for every attempt of the run.

    A run that ran before carries its start time; a run starting now started with the Running
    state the engine has just had accepted (the server takes its start time from that state).
    """
    if run.start_time is not None:
        return run.start_time
    if run.state is not None and run.state.is_running():
        return run.state.timestamp
    try:
        with sync_client() as client:
            return client.read_flow_run(run.id).start_time
    except Exception:
        return None


# ---------------------------------------------------------------- the walk


def run_steps(inc: Incident, steps: list) -> None:
    for step in steps:
        run_step(inc, step)


def run_step(inc: Incident, step) -> None:
    if not inc.holds(step.when):
        inc.set_result(step.id, {"status": "skipped"})
        inc.record("step.skipped", f"condition not met: {step.when}", step=step.id)
        return
    missed_first(inc, step.id)
    inc.record("step.started", inc.text(step.title, "zh") + " / " + inc.text(step.title, "en"), step=step.id, step_kind=step.kind)
    while True:
        try:
            result = HANDLERS[step.kind](inc, step, run_steps)
        except (IncidentEnded, StepFailed):
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            inc.record("step.failed", error, step=step.id, error=error)
            decision = _on_failure(inc, step, error)
            if decision == "retry":
                inc.record("step.retried", "retried on the lead's decision", step=step.id)
                continue
            if decision == "abort":
                inc.set_result(step.id, {"status": "failed", "error": error})
                raise StepFailed(f"step '{step.id}' failed: {error}") from None
            result = {"status": "failed", "error": error}
        break
    result.setdefault("status", "done")
    inc.set_result(step.id, result)
    if result["status"] == "done":
        inc.record("step.done", summary(result), step=step.id, actor=result.get("answered_by"))


def _on_failure(inc: Incident, step, error: str) -> str:
    """The step's failure policy: abort, continue, or ask the runbook's lead (retry, continue or abort)."""
    if step.on_failure != "escalate":
        return step.on_failure
    lead = inc.runbook.lead
    decide = ManualStep(
        kind="manual", id=f"{step.id}-failed", answerers=[lead],
        title=Text(zh=f"决定如何处理失败的步骤：{step.title.zh}", en=f"Decide what to do about the failed step: {step.title.en}"),
        instructions=Text(zh=f"错误：{error}", en=f"Error: {error}"),
        fields=[FormField(id="decision", type="choice", default="continue", label=Text(zh="处理", en="Decision"),
                          choices=[Choice(value=v, label=Text(zh=z, en=v)) for v, z in
                                   (("retry", "重试"), ("continue", "继续"), ("abort", "终止"))])],
    )
    inc.page([lead], f"步骤失败 Step failed: {inc.text(step.title, 'zh')} / {inc.text(step.title, 'en')}\n{error}",
             step=decide.id, answer_options=["retry", "continue", "abort"])
    answer = ask(inc, decide, kind="manual")
    inc.record("step.escalated", f"lead decided: {answer['decision']}", step=step.id, actor=answer.get("answered_by"))
    return answer["decision"]


# ---------------------------------------------------------------- making flows


def flow_options(runbook: Runbook) -> dict[str, Any]:
    return dict(
        name=runbook.id,
        description=f"{runbook.title.both()}\n\n{runbook.description.en}",
        flow_run_name=_run_name(runbook),
        validate_parameters=True,
        log_prints=True,
        persist_result=False,
    )


def _run_name(runbook: Runbook) -> Callable[[], str]:
    def name() -> str:
        params = flow_run.parameters or {}
        prefix = f"{'[演练 DRILL] ' if params.get('drill') else ''}{runbook.id} · "
        if not params.get("incident") and (flow_run.name or "").startswith(prefix):
            return flow_run.name  # Prefect names the run again at every attempt: it keeps the time it first started
        return prefix + (params.get("incident") or datetime.now(site_zone()).strftime("%m-%d %H:%M:%S"))

    return name
