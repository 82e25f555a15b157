"""Wait steps: let time pass (scaled in drills) unless the incident closes.

Run locally (`runbook run`), a wait sleeps in its process. From a deployment (tasks.people.suspends_waits)
a wait keeps its start on the flow run (`once-wait-<step>`), so every attempt of the run agrees on its
end; while more than `suspend_wait_after` real seconds are left (RUNBOOK_SUSPEND_WAIT_AFTER, 30 s) it
suspends the run instead (its process exits) with a timer for its end, and the escalation watcher wakes the run then (and for any threshold or
deadline due meanwhile). The woken run finds the wait over and the step completes; what is left under
that (a short wait, or the rest of a long one woken early) is slept in the process, where a
restart and the watcher's wake-up latency (a pass, then a forked start: seconds) would cost more than
the process.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from prefect.exceptions import Pause
from prefect.input import RunInput

from integrations.localtime import local_time
from runbooks.model import WaitStep
from tasks.client import sync_client
from tasks.incident import Incident
from runbooks.settings import get_settings
from tasks.inputs import pause_key, prefect_away
from tasks.records import done_record
from tasks.people import pause_run, run_id_here, suspends_waits
from tasks.tiers import at_text, wait_key
from tasks.steps import Walk, runs, step_task

@runs("wait")
def run(inc: Incident, step: WaitStep, walk: Walk) -> dict:
    seconds = inc.seconds(step.duration)
    end = None  # a wait in its process only: it sleeps `seconds` from now, as ever
    if suspends_waits():
        began = inc.first_time(f"wait-{step.id}").timestamp()  # the same for every attempt of the run
        end = began + seconds
        try:
            if end - time.time() > get_settings().suspend_wait_after and not inc.closed.is_set() and not _done(inc, step):
                suspend_until(inc, step, began, end, description=_describe(inc, step, end))  # raises Pause
        except Exception as exc:
            if not prefect_away(exc):
                raise
            # Prefect away (restarting, busy): the wait is slept here instead; an incident must not fail for it

    def pause(step_id: str) -> dict:
        inc.sleep(seconds if end is None else max(end - time.time(), 0))
        if end is not None:
            inc.claim(f"waited-{step.id}")  # its timer in a suspended wait's record is done
        return {"waited_seconds": round(seconds, 3)}

    return step_task(step, pause, inc)(step.id)


def _done(inc: Incident, step: WaitStep) -> bool:
    """Whether an earlier attempt of the run recorded the step done (below it comes back Cached): never suspend for it."""
    known = inc.done_before(step.id)
    if known is not None:
        return known
    with sync_client() as client:
        return done_record(client, inc.id, step.id) is not None


def _describe(inc: Incident, step: WaitStep, end: float) -> str:
    """The Markdown of the suspended run's Resume form: there is nothing to answer."""
    at = local_time(datetime.fromtimestamp(end, timezone.utc), inc.site.time_zone)
    return (f"### {inc.text(step.title, 'zh')} / {inc.text(step.title, 'en')}\n\n"
            f"等待至 {at}，届时自动继续；现在恢复不会缩短等待。\n\n"
            f"Waiting until {at}; the run goes on by itself then. Resuming it now does not shorten the wait.")


class WaitForm(RunInput):
    """The Resume form of a suspended `wait` step: nothing to answer; the run goes on by itself at the wait's end."""


def suspend_until(incident: Incident, step: WaitStep, began: float, until: float, *, description: str) -> None:
    """Free the run's process until `until` (epoch s): a `wait` step's long wait.

    Suspends the run the way a wait for people does (its `who` record, read by the escalation watcher), with
    one timer more: the wait's end, claimed `waited-<step>` by the run that gets past it. The incident's
    thresholds and deadlines are in the record too, so the watcher wakes the run for them meanwhile and the
    woken run suspends again with what is left. Each suspension of the step takes the next free pause key
    (a key fires once per run). Raises Pause, which ends the process.
    """
    run_id = run_id_here()
    timers = [{"what": f"wait {step.id} ends", "at": at_text(until), "claim": f"waited-{step.id}"}] + incident.upcoming()
    who = {"runbook": incident.runbook.id, "incident": incident.id, "step": step.id, "kind": "wait",
           "title": step.title.both(), "may_answer": [], "waiting_since": at_text(began), "asked_at": at_text(time.time()),
           "suspended": True, "until": at_text(until), "tiers": [], "wait_key": wait_key(step.id, began), "paged": [],
           "last_page": at_text(began), "expires_at": None, "timers": timers}
    with sync_client() as client:
        fired = client.read_flow_run(run_id).empirical_policy.pause_keys or set()
        ask = next(n for n in range(1, 10_000) if pause_key(step.id, n) not in fired)
        state, _ = pause_run(client, run_id, pause_key(step.id, ask), WaitForm, description, who=who, reschedule=True)
    incident.record("step.waiting", f"waiting until {local_time(at_text(until), incident.site.time_zone)} — suspended",
                    step=step.id, pause_key=pause_key(step.id, ask))
    raise Pause(state=state)
