"""Wait steps: let time pass (scaled in drills) unless the incident closes.

Run locally (`runbook run`), a wait sleeps in its process. From a deployment (tasks.people.suspends_waits)
a wait keeps its start on the flow run (`once-wait-<step>`), so every attempt of the run agrees on its
end; while more than SUSPEND_AFTER real seconds are left it suspends the run instead (its process exits)
with a timer for its end, and the escalation watcher wakes the run then (and for any threshold or
deadline due meanwhile). The woken run finds the wait over and the step completes; what is left under
SUSPEND_AFTER (a short wait, or the rest of a long one woken early) is slept in the process, where a
restart and the watcher's wake-up latency (a pass, then a forked start: seconds) would cost more than
the process.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from prefect.client.orchestration import get_client

from integrations.localtime import local_time
from runbooks.model import WaitStep
from tasks.incident import Incident
from tasks.inputs import read_input
from tasks.people import suspend_until, suspends_waits
from tasks.steps import Walk, runs, step_task

# Real seconds left above which a wait on a deployment frees its process (RUNBOOK_SUSPEND_WAIT_AFTER overrides).
SUSPEND_AFTER = float(os.environ.get("RUNBOOK_SUSPEND_WAIT_AFTER", "30"))


@runs("wait")
def run(inc: Incident, step: WaitStep, walk: Walk) -> dict:
    seconds = inc.seconds(step.duration)
    end = None  # a wait in its process only: it sleeps `seconds` from now, as ever
    if suspends_waits():
        began = inc.first_time(f"wait-{step.id}").timestamp()  # the same for every attempt of the run
        end = began + seconds
        if end - time.time() > SUSPEND_AFTER and not inc.closed.is_set() and not _done(inc, step):
            suspend_until(inc, step, began, end, description=_describe(inc, step, end))  # raises Pause

    def pause(step_id: str) -> dict:
        inc.sleep(seconds if end is None else max(end - time.time(), 0))
        if end is not None:
            inc.claim(f"waited-{step.id}")  # its timer in a suspended wait's record is done
        return {"waited_seconds": round(seconds, 3)}

    return step_task(step, pause, inc)(step.id)


def _done(inc: Incident, step: WaitStep) -> bool:
    """Whether an earlier attempt of the run recorded the step done (below it comes back Cached): never suspend for it."""
    with get_client(sync_client=True) as client:
        return read_input(client, inc.id, f"done-{step.id}") is not None


def _describe(inc: Incident, step: WaitStep, end: float) -> str:
    """The Markdown of the suspended run's Resume form: there is nothing to answer."""
    at = local_time(datetime.fromtimestamp(end, timezone.utc), inc.site.time_zone)
    return (f"### {inc.text(step.title, 'zh')} / {inc.text(step.title, 'en')}\n\n"
            f"等待至 {at}，届时自动继续；现在恢复不会缩短等待。\n\n"
            f"Waiting until {at}; the run goes on by itself then. Resuming it now does not shorten the wait.")
