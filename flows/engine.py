"""The interpreter: run a runbook's steps inside a Prefect flow run.

One small recursive walk over the step tree. Steps that do work run as task
runs named after the step (so retries and timeouts are Prefect's own); steps
that wait for people pause the flow run; parallel tracks run as child flow runs
side by side; thresholds and deadlines are watched by a thread beside the main
line for as long as the incident is open.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Optional
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from prefect import flow, task, tags
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed

from tasks.incident import Incident, IncidentEnded, run_url
from integrations.contacts import load_directory
from integrations.site import load_site
from runbooks.model import Choice, Deadline, FormField, ManualStep, Runbook, Text, Threshold
from runbooks.settings import get_settings
from tasks import action as action_kind
from tasks import check as check_kind
from tasks import people as manual_kind
from tasks import notify as notify_kind
from tasks import wait as wait_kind

# How an incident ended -> the name of the run's final state.
OUTCOMES = {"resolved": "Completed", "rejected": "Rejected", "expired": "Expired", "failed": "Failed"}


class StepFailed(Exception):
    pass


class ParameterError(ValueError):
    pass


# ---------------------------------------------------------------- parameters


_PARAM_TYPES: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool, "datetime": datetime}


def parameters_model(runbook: Runbook) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, p in runbook.parameters.items():
        typ: Any = Literal[tuple(p.choices)] if p.choices else _PARAM_TYPES[p.type]  # type: ignore[misc]
        fields[name] = (typ, ...) if p.is_required() else (Optional[typ], p.default)
    return create_model(f"{runbook.id}-parameters", __config__=ConfigDict(extra="forbid"), **fields)


def validate_parameters(runbook: Runbook, values: dict[str, Any]) -> dict[str, Any]:
    try:
        return parameters_model(runbook)(**(values or {})).model_dump()
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_url=False):
            name = ".".join(str(x) for x in e["loc"])
            if e["type"] == "missing":
                problems.append(f"parameter '{name}' is required ({runbook.parameters[name].label.both()})")
            elif e["type"] == "extra_forbidden":
                problems.append(f"'{name}' is not a parameter of {runbook.id}; known: {', '.join(runbook.parameters) or 'none'}")
            else:
                problems.append(f"parameter '{name}': {e['msg']}")
        raise ParameterError("; ".join(problems)) from None


# ---------------------------------------------------------------- the flow body


def run_incident(runbook: Runbook, *, parameters: dict | None, severity: str | None, drill: bool, time_scale: float,
                 auto: bool, answers: dict | None, incident: str | None, alert: dict | None):
    """Body of every runbook flow. Returns the run's final state, named after the outcome."""
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id)
    settings = get_settings()
    if severity is not None and runbook.level(severity) is None:
        levels = ", ".join(lv.id for lv in runbook.severity.levels) if runbook.severity else "none (this runbook is not graded)"
        return Failed(message=f"severity '{severity}' is not a level of {runbook.id}; levels: {levels}")
    try:
        params = validate_parameters(runbook, parameters or {})
    except ParameterError as exc:
        return Failed(message=str(exc))
    inc = Incident(runbook, params=params, severity=severity, drill=drill, time_scale=time_scale, auto=auto,
                   answers=answers or {}, alert=alert, flow_run_id=run_id, label=incident,
                   directory=load_directory(settings.contacts_file), site=load_site(settings.site_file),
                   run_url=run_url(run_id), started=_run_started(run_id))
    inc.record("incident.started", f"{runbook.title.zh} / {runbook.title.en}" + (" [DRILL]" if drill else ""),
               actor="alert" if alert else "runbook", params=_plain(params), drill=drill, time_scale=time_scale,
               severity=inc.severity, label=incident)
    if alert:
        inc.record("alert.received", alert.get("summary") or alert.get("labels", {}).get("alertname", "alert"), actor="alert", alert=alert)
    from flows.record.progress import follow_progress  # progress artifact, updated as steps finish

    follow_progress(inc)
    watcher = _start(lambda: watch_time_rules(inc), name=f"time-rules-{run_id}")
    outcome, message = "resolved", "every step done"
    tag_list = [f"runbook:{runbook.id}"] + (["drill"] if drill else [])
    try:
        with tags(*tag_list):
            run_steps(inc, runbook.steps)
    except IncidentEnded as end:
        outcome, message = end.outcome, end.message
    except StepFailed as exc:
        outcome, message = "failed", str(exc)
    finally:
        inc.closed.set()
        watcher.join(timeout=30)
    for dl in runbook.deadlines:
        if _deadline_state(inc, dl) == "open" and _due(inc, dl) is not None and inc.holds(dl.when):
            inc.record("deadline.unmet", f"{dl.title.zh} / {dl.title.en}: not met when the incident closed", step=dl.id)
    inc.record("incident.closed", message, actor="runbook", outcome=outcome)
    from flows.record.publish import publish_incident

    publish_incident(inc, outcome, message)
    name = OUTCOMES[outcome]
    if outcome == "failed":
        return Failed(message=message, name=name)
    return Completed(message=message, name=name)


def _run_started(run_id: str) -> datetime | None:
    """When this flow run first started running; the same for every attempt of the run."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(run_id)).start_time
    except Exception:
        return None


def _start(target: Callable[[], None], name: str) -> threading.Thread:
    """A thread that sees this run's Prefect context (logger, events, client)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}


# ---------------------------------------------------------------- steps


def run_steps(inc: Incident, steps: list) -> None:
    for step in steps:
        run_step(inc, step)


def run_step(inc: Incident, step) -> None:
    if not inc.holds(step.when):
        inc.set_result(step.id, {"status": "skipped"})
        inc.record("step.skipped", f"condition not met: {step.when}", step=step.id)
        return
    inc.record("step.started", inc.text(step.title, "zh") + " / " + inc.text(step.title, "en"), step=step.id, step_kind=step.kind)
    while True:
        try:
            result = HANDLERS[step.kind](inc, step)
        except IncidentEnded:
            raise
        except StepFailed:
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
        inc.record("step.done", _summary(result), step=step.id, actor=result.get("answered_by"))


def _summary(result: dict[str, Any]) -> str:
    shown = {k: v for k, v in result.items() if k not in ("status", "text", "waited_seconds")}
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    return text[:500]


def _on_failure(inc: Incident, step, error: str) -> str:
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
    answer = _ask(inc, decide, kind="manual")
    inc.record("step.escalated", f"lead decided: {answer['decision']}", step=step.id, actor=answer.get("answered_by"))
    return answer["decision"]


# Steps that act on the world (or take time) are done once per incident: their result is persisted under the key
# "<root flow run id>:<step id>", so when the run starts again from the top (a worker died and `runbook recover`
# rescheduled it, a suspended wait resumed, a flow retry) they come back Cached instead of acting twice.
# Every worker must see the same result storage (PREFECT_LOCAL_STORAGE_PATH on a shared disk, or a storage block).
ONCE_KINDS = {"action", "notify", "report", "wait"}


def _step_task(step, fn: Callable[..., Any], inc: Incident | None = None):
    """A task run named after the step, with the step's retries and timeout (and done once per incident, given `inc`)."""
    if inc is not None and step.kind in ONCE_KINDS:
        key = f"{inc.id}:{step.id}"
        once = dict(cache_key_fn=lambda context, parameters: key, persist_result=True)
        if step.kind == "action":  # `prefect concurrency-limit create site:<name> N` bounds actions at one site
            once["tags"] = [f"site:{inc.site.name}"]
    else:
        once = dict(cache_policy=NO_CACHE, persist_result=False)
    return task(fn, name=step.id, task_run_name=step.id, **once,
                retries=getattr(step, "retries", 0), retry_delay_seconds=getattr(step, "retry_delay", timedelta()).total_seconds(),
                timeout_seconds=step.timeout.total_seconds() if getattr(step, "timeout", None) else None)


def _note(step, inc: Incident, record: dict[str, Any]) -> dict[str, Any]:
    """Record a decision or an answer as the step's own task run, so every step shows in the UI."""

    def note(summary: dict[str, Any]) -> dict[str, Any]:
        return summary

    return _step_task(step.model_copy(update={"retries": 0, "timeout": None}), note)(_plain(record))


def do_action(inc: Incident, step) -> dict:
    def act(step_id: str) -> dict:
        limit = step.timeout.total_seconds() if step.timeout else None
        return {"result": action_kind.perform(step, inc.context(), site=inc.site, drill=inc.drill, limit=limit)}

    return _step_task(step, act, inc)(step.id)


def do_check(inc: Incident, step) -> dict:
    def probe(step_id: str) -> dict:
        return check_kind.check(inc, step)

    return _step_task(step, probe)(step.id)


def do_wait(inc: Incident, step) -> dict:
    def pause(step_id: str) -> dict:
        return wait_kind.wait(inc, inc.seconds(step.duration))

    return _step_task(step, pause, inc)(step.id)


def do_notify(inc: Incident, step) -> dict:
    def send(step_id: str) -> dict:
        return notify_kind.notify(inc, step)

    result = _step_task(step, send, inc)(step.id)
    if step.ack:
        answer = _wait_for_people(inc, step, kind="ack")
        if answer is None:
            return {**result, "status": "expired"}
        result.update(answer)
    return result


def do_manual(inc: Incident, step) -> dict:
    answer = _wait_for_people(inc, step, kind="manual")
    return {"status": "expired"} if answer is None else _note(step, inc, answer)


def do_approval(inc: Incident, step) -> dict:
    answer = _wait_for_people(inc, step, kind="approval")
    if answer is None:
        return {"status": "expired"}
    record = _note(step, inc, answer)
    if answer["decision"] == "reject":
        inc.set_result(step.id, {**record, "status": "rejected"})
        inc.record("approval.rejected", answer.get("comment") or "", step=step.id, actor=answer["answered_by"])
        run_steps(inc, step.on_reject)
        if not step.continue_on_reject:
            raise IncidentEnded("rejected", f"{step.id} rejected by {answer['answered_by']}")
        return {**record, "status": "rejected"}
    inc.record("approval.approved", answer.get("comment") or "", step=step.id, actor=answer["answered_by"])
    return record


def _wait_for_people(inc: Incident, step, *, kind: str) -> dict | None:
    """An accepted answer, or None after the expiry branch ran (when the runbook goes on)."""
    try:
        answer = _ask(inc, step, kind=kind)
    except manual_kind.Expired as exc:
        inc.set_result(step.id, {"status": "expired"})
        inc.record("step.expired", str(exc), step=step.id)
        run_steps(inc, step.on_expiry)
        if not step.continue_on_expiry:
            raise IncidentEnded("expired", f"{step.id}: {exc}") from None
        return None
    inc.record("step.answered", _summary(answer), step=step.id, actor=answer.get("answered_by"), answer=_plain(answer))
    return answer


def _ask(inc: Incident, step, *, kind: str) -> dict:
    """Get an answer from the script, from --auto, or from people (pausing the run)."""
    allowed = inc.may_answer(step.answerers)
    scripted = inc.answers.get(step.id)
    if scripted == "expire":
        raise manual_kind.Expired("scripted: nobody answers")
    if scripted is not None or inc.auto:
        # A script that does not say who answered answers as the first person allowed to.
        by = allowed[0].id if allowed else ("drill" if inc.auto else "scripted")
        values = {manual_kind.ANSWERED_BY: by, **scripted} if scripted is not None else manual_kind.default_answer(step, kind=kind, by=by)
        try:
            answer = manual_kind.validate_answer(manual_kind.form_model(step, kind=kind), values)
            if scripted is not None:
                manual_kind.check_identity(answer[manual_kind.ANSWERED_BY], allowed, inc)
        except (ValidationError, manual_kind.Refused) as exc:
            raise StepFailed(f"the scripted answer for '{step.id}' is not valid: {manual_kind._reason(exc)}") from None
        answer["answered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return answer
    replayed = manual_kind.replay(inc, step, kind=kind, allowed=allowed)  # answered before a restart
    if replayed is not None:
        return replayed
    description = describe(inc, step, kind=kind, allowed=allowed)
    first = getattr(step, "answerers", None) or ([step.role] if step.role else [])
    if kind in ("manual", "approval") and first and manual_kind.is_new_wait(step):
        inc.page(first, description, step=step.id, answer_options=manual_kind._options(kind))
    tiers = [(inc.seconds(t.after), t.notify, inc.both(t.message) if t.message else description) for t in step.escalation]
    return manual_kind.wait_for_answer(
        inc, step, kind=kind, description=description, allowed=allowed, tiers=tiers,
        remind_every=inc.seconds(step.remind_every) if step.remind_every else None,
        expires=inc.seconds(step.expires) if step.expires else None,
        first=(list(step.to), inc.both(step.message)) if kind == "ack" else ((first, description) if first else None),
    )


def describe(inc: Incident, step, *, kind: str, allowed: list) -> str:
    """The Markdown shown above the form in the Prefect UI."""
    lines = []
    if inc.drill:
        lines.append("> **演练 DRILL** — 这是一次演练 / this is a drill.\n")
    lines.append(f"### {inc.text(step.title, 'zh')} / {inc.text(step.title, 'en')}")
    lines.append(f"*{inc.runbook.title.zh} / {inc.runbook.title.en}*" + (f" · 级别 Severity: **{inc.level_label()}**" if inc.severity else ""))
    if step.instructions:
        lines += ["", inc.text(step.instructions, "zh"), "", inc.text(step.instructions, "en")]
    if kind == "ack":
        lines += ["", inc.both(step.message)]
    if allowed:
        lines += ["", "**可回答 May answer:** " + ", ".join(f"{p.name} (`{p.id}`)" for p in allowed)]
    lines += ["", "请在 *回答人 Answered by* 中填写您的姓名或编号 / Put your name or id in *Answered by*."]
    if step.expires:
        lines.append(f"\n未在 {step.expires} 内回答将按超时处理 / Unanswered after {step.expires}, the step expires.")
    return "\n".join(lines)


def do_branch(inc: Incident, step) -> dict:
    for index, case in enumerate(step.cases):
        if inc.holds(case.when):
            _note(step, inc, {"case": index + 1, "when": case.when})
            inc.record("branch.taken", f"case {index + 1}: {case.when}", step=step.id, case=index + 1)
            run_steps(inc, case.steps)
            return {"case": index + 1}
    _note(step, inc, {"case": "otherwise"})
    inc.record("branch.taken", "otherwise", step=step.id, case="otherwise")
    run_steps(inc, step.otherwise)
    return {"case": "otherwise"}


def do_grade(inc: Incident, step) -> dict:
    rb = inc.runbook
    if inc.severity_override:
        inc.record("severity.kept", f"level {inc.severity} was set by hand", step=step.id, severity=inc.severity)
    else:
        inc.severity, inc.severity_reason = rb.severity.default, "no rule held; default level"
        for rule in rb.severity.rules:
            if inc.holds(rule.when):
                inc.severity, inc.severity_reason = rule.level, f"{rule.reason.zh} / {rule.reason.en}"
                break
        inc.record("severity.graded", f"{inc.level_label()}: {inc.severity_reason}", step=step.id, severity=inc.severity)
    _note(step, inc, {"severity": inc.severity, "reason": inc.severity_reason})
    return {"severity": inc.severity, "reason": inc.severity_reason}


def do_report(inc: Incident, step) -> dict:
    def draft(step_id: str) -> dict:
        document = "\n\n".join(part for part in (inc.text(step.document, "zh"), inc.text(step.document, "en")) if part)
        if inc.drill:
            document = "> **演练 DRILL**\n\n" + document
        try:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(markdown=document, key=f"{inc.runbook.id}-{step.id}"[:100],
                                     description=f"{step.title.zh} / {step.title.en}")
        except Exception as exc:  # the draft is kept on the incident even if the artifact cannot be written
            inc.record("report.unpublished", str(exc), step=step.id)
        return {"document": document}

    state = _step_task(step, draft, inc)(step.id, return_state=True)
    result = state.result()
    inc.record("report.drafted", f"{step.title.zh} / {step.title.en}", step=step.id, length=len(result["document"]))
    if step.to and state.name == "Cached":
        inc.record("report.sent", "already sent before the run restarted", step=step.id)
    elif step.to:
        title = f"{inc.runbook.title.zh} · {inc.text(step.title, 'zh')}"
        sent = [d for d in inc.page(step.to, result["document"], step=step.id, title=title) if d.outcome == "sent"]
        inc.record("report.sent", f"to {', '.join(step.to)}", step=step.id, people=sorted({d.person for d in sent}))
    return result


def do_end(inc: Incident, step) -> dict:
    message = inc.text(step.title, "zh") + " / " + inc.text(step.title, "en")
    _note(step, inc, {"outcome": step.outcome})
    inc.set_result(step.id, {"status": "done", "outcome": step.outcome})
    raise IncidentEnded(step.outcome, message)


def do_parallel(inc: Incident, step) -> dict:
    """Each track is a child flow run of its own, so each can pause for its own people."""
    finished = {track.id: threading.Event() for track in step.tracks}
    errors: list[BaseException] = []

    def run_track(track) -> None:
        try:
            for dep in track.after:
                finished[dep].wait()
            if errors:
                return
            track_flow(inc, step, track)()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the parent below)
            errors.append(exc)
        finally:
            finished[track.id].set()

    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=len(step.tracks), thread_name_prefix=step.id) as pool:
        futures = [pool.submit(context.copy().run, run_track, track) for track in step.tracks]
        for future in futures:
            future.result()
    ended = next((e for e in errors if isinstance(e, IncidentEnded)), None)
    if ended:
        raise ended
    if errors:
        raise StepFailed(f"track failed: {errors[0]}")
    return {"tracks": [t.id for t in step.tracks]}


def track_flow(inc: Incident, step, track):
    def run_track() -> None:
        inc.record("track.started", f"{track.title.zh} / {track.title.en}", step=track.id)
        run_steps(inc, track.steps)
        inc.record("track.done", "", step=track.id)

    run_track.__name__ = run_track.__qualname__ = track.id.replace("-", "_")
    return flow(run_track, name=f"{inc.runbook.id}.{track.id}", flow_run_name=f"{inc.runbook.id} · {track.id}",
                validate_parameters=False)


HANDLERS: dict[str, Callable[[Incident, Any], dict]] = {
    "action": do_action, "check": do_check, "wait": do_wait, "notify": do_notify, "manual": do_manual,
    "approval": do_approval, "branch": do_branch, "grade": do_grade, "end": do_end, "parallel": do_parallel,
    "report": do_report,
}


# ---------------------------------------------------------------- time rules


def _start_time(inc: Incident, start: str) -> datetime | None:
    if start == "incident":
        return inc.started
    if start.startswith("param:"):
        value = inc.params.get(start[6:])
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return inc.started
    return inc.finished_at.get(start[5:])


def _due(inc: Incident, rule: Threshold | Deadline) -> datetime | None:
    start = _start_time(inc, rule.start)
    if start is None:
        return None
    if isinstance(rule, Deadline) and rule.working_days:
        from runbooks.workdays import add_working_days

        span = add_working_days(start, rule.working_days) - start
    else:
        span = rule.after if isinstance(rule, Threshold) else rule.within
    return start + span / inc.time_scale


def _deadline_state(inc: Incident, dl: Deadline) -> str:
    kinds = {e.kind for e in inc.journal if e.step == dl.id}
    if "deadline.met" in kinds or "deadline.met-late" in kinds:
        return "met"
    return "missed" if "deadline.missed" in kinds else "open"


NOT_MEETING = ("skipped", "failed", "expired", "rejected")  # a step that ended so did not do what a deadline asks


def watch_time_rules(inc: Incident) -> None:
    """Fire thresholds and watch deadlines until the incident closes, then settle the deadlines once more.

    The last pass catches a deadline met by one of the final steps in the moment before the close.
    """
    thresholds = list(inc.runbook.thresholds)
    deadlines = {dl.id: "open" for dl in inc.runbook.deadlines}
    closing = False
    while True:
        now = datetime.now(timezone.utc)
        for th in list(thresholds):
            if th.until_step and th.until_step in inc.finished_at:
                thresholds.remove(th)
                inc.record("threshold.cancelled", f"{th.title.zh} / {th.title.en}: {th.until_step} done first", step=th.id)
                continue
            if closing:  # the last pass only settles what already happened; nothing fires after the close
                continue
            due = _due(inc, th)
            if due is not None and now >= due and inc.holds(th.when):  # a condition not met yet is checked again
                thresholds.remove(th)
                if inc.claim(f"threshold-{th.id}"):
                    inc.record("threshold.fired", f"{th.title.zh} / {th.title.en} (after {th.after})", step=th.id)
                    run_side_steps(inc, th.steps)
                else:
                    inc.record("threshold.fired-earlier", f"{th.title.en}: fired before this run restarted", step=th.id)
        for dl in inc.runbook.deadlines:
            state = deadlines[dl.id]
            if state == "met":
                continue
            due = _due(inc, dl)
            done = inc.finished_at.get(dl.met_by)
            if done is not None and inc.steps.get(dl.met_by, {}).get("status") not in NOT_MEETING:
                late = due is not None and done > due
                deadlines[dl.id] = "met"
                inc.record("deadline.met-late" if late else "deadline.met", f"{dl.title.zh} / {dl.title.en}", step=dl.id,
                           due=due.isoformat() if due else None, met_by=dl.met_by)
            elif state == "open" and due is not None and now >= due and not closing and inc.holds(dl.when):
                deadlines[dl.id] = "missed"
                inc.record("deadline.missed", f"{dl.title.zh} / {dl.title.en}: due {due.isoformat(timespec='seconds')}",
                           step=dl.id, due=due.isoformat())
                if inc.claim(f"deadline-missed-{dl.id}"):  # its pages went out already if the run restarted
                    run_side_steps(inc, dl.on_miss)
        if closing:
            return
        closing = inc.closed.wait(0.2)


def run_side_steps(inc: Incident, steps: list) -> None:
    """Steps of a time rule: run beside the main line as plain calls (new task runs cannot start while it is paused)."""
    for step in steps:
        if not inc.holds(step.when):
            continue
        try:
            if step.kind == "notify":
                result = notify_kind.notify(inc, step)
            else:
                result = {"result": action_kind.perform(step, inc.context(), site=inc.site, drill=inc.drill)}
            inc.set_result(step.id, {**result, "status": "done"})
            inc.record("step.done", _summary(result), step=step.id)
        except Exception as exc:  # a time rule's failure is recorded, never fatal to the incident
            inc.record("step.failed", f"{type(exc).__name__}: {exc}", step=step.id)


# ---------------------------------------------------------------- making flows


def flow_options(runbook: Runbook) -> dict[str, Any]:
    return dict(
        name=runbook.id,
        description=f"{runbook.title.zh} / {runbook.title.en}\n\n{runbook.description.en}",
        flow_run_name=_run_name(runbook),
        validate_parameters=True,
        log_prints=True,
        persist_result=False,
    )


def _run_name(runbook: Runbook) -> Callable[[], str]:
    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters or {}
        label = params.get("incident") or datetime.now().strftime("%m-%d %H:%M:%S")
        drill = "[演练 DRILL] " if params.get("drill") else ""
        return f"{drill}{runbook.id} · {label}"

    return name

