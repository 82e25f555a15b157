"""A step that a time rule counts from keeps the time it first finished, across the attempts of its run.

A resumed attempt (a suspended wait answered, a watcher's wake, a recovery) replays the steps done before and
sets their results again. If the rule's start moved to the replay's time, a deadline counted from that step would
restart at every wake and never be missed. The first finish is kept on the flow run (`once-finished-<step>`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from prefect import flow
from prefect.client.orchestration import get_client

from flows.time_rules import due
from integrations.contacts import load_directory
from integrations.site import load_site
from runbooks.loader import load_file
from runbooks.settings import get_settings
from tasks.incident import Incident


@flow(name="timed-steps-placeholder")
def placeholder() -> None:
    """Never runs: its flow run only holds the incident's records."""


def attempt(run_id: str, started: datetime) -> Incident:
    settings = get_settings()
    rb = load_file(settings.runbooks_dir / "hospital-his-outage.yaml", load_directory(settings.contacts_file))
    return Incident(rb, params={}, severity="1", drill=True, time_scale=1.0, auto=True, answers={}, alert=None,
                    flow_run_id=run_id, directory=load_directory(settings.contacts_file),
                    site=load_site(settings.site_file), started=started)


def test_a_resumed_attempt_keeps_the_first_finish_of_a_step_a_deadline_counts_from():
    with get_client(sync_client=True) as client:
        run_id = str(client.create_flow_run(placeholder, tags=["test"]).id)
    started = datetime.now(timezone.utc) - timedelta(minutes=5)
    first = attempt(run_id, started)
    assert "confirm-recovery" in first.timed_steps and "fault-report" in first.timed_steps  # start and met_by
    first.set_result("confirm-recovery", {"status": "done", "stable": "yes"})
    finished = first.finished_at["confirm-recovery"]
    deadline = next(dl for dl in first.runbook.deadlines if dl.id == "fault-report-2-days")
    assert due(first, deadline) == finished + timedelta(days=2)

    time.sleep(1.1)
    resumed = attempt(run_id, started)  # the same run, a later attempt: it replays the step
    heard: list[str] = []
    resumed.on_result.append(lambda step_id, result: heard.append(step_id))  # as the progress artifact listens
    resumed.set_result("confirm-recovery", {"status": "done", "stable": "yes"})
    assert heard == ["confirm-recovery"]
    assert resumed.finished_at["confirm-recovery"] == finished
    assert due(resumed, deadline) == finished + timedelta(days=2), "the deadline's clock did not restart"

    resumed.set_result("announce-restart", {"status": "done"})  # no rule counts from it: its own time, no record
    assert resumed.finished_at["announce-restart"] > finished + timedelta(seconds=1)
