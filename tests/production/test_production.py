"""Incidents on the production shape, set up by docs/production.md's own commands: PostgreSQL, deployments,
process workers, the watcher, the receiver, restarts, stopping.

Each test starts from an alert (through the receiver) or start_incident, and counts what the fake firewall
received: an action that completed must have run exactly once, whatever happened to the workers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from uuid import UUID

import pytest

from flows.record.archive import IncidentRecord
from tests.production import doc
from tests.production.conftest import ROOT, Counter, Procs, pg_bin

pytestmark = pytest.mark.postgres


def wait_until(what: str, check, seconds: float = 90, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def run_state(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id))).state


def waiting_at(run_id, step: str):
    from flows.answers import pending_steps

    return next((p for p in pending_steps() if p.flow_run_id == str(run_id) and p.step == step), None)


def task_states(run_id) -> dict[str, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(run_id))])))
    out: dict[str, list[str]] = {}
    for t in sorted(runs, key=lambda t: t.expected_start_time):
        out.setdefault(t.name, []).append(t.state.name)
    return out


def test_prefect_yaml_is_generated_from_the_runbooks():
    out = subprocess.run([sys.executable, "-m", "flows.deploy", "--check"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "RUNBOOK_RUNBOOKS_DIR": str(ROOT / "runbooks")})
    assert out.returncode == 0, out.stderr


def test_the_server_is_on_postgresql_as_the_document_checks(production):
    listed = production.shell(doc.block("check-postgres"), production.env("cli"))
    assert listed.split() == ["runbooks"], listed  # the pool `prefect work-pool create` made through the API
    assert "%" in production.database_url and "p@ss" not in production.database_url  # the password went in encoded
    bindir = pg_bin()
    installed = re.search(r"/usr/lib/postgresql/(\d+)/", str(bindir))
    if installed:  # the version the document starts is the one Debian installed
        assert f"pg_ctlcluster {installed.group(1)} main start" in doc.block("postgres-start")


def test_an_alert_becomes_an_incident_that_suspends_while_waiting_and_completes(production, firewall):
    _, base_url = firewall
    production.worker("worker-a")
    production.intake()
    with production.settings():
        labels = {"runbook": "prod-block", "base_url": base_url, "severity": "critical"}
        answer = production.send_alert(labels)
        assert answer.status_code == 202, answer.text
        # the same alert again (Alertmanager re-sends) joins the same incident
        assert production.send_alert(labels).status_code == 202

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

        def the_run():
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(),
                                             deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["runbook"])))
            runs = [r for r in runs if "runbook:prod-block" in r.tags]
            return runs if runs else None

        run_id = wait_until("the incident's flow run", the_run, 60)[0].id
        time.sleep(2)
        assert len(the_run()) == 1, "the re-sent alert joined the incident"
        waiting = wait_until("the confirm step", lambda: waiting_at(run_id, "confirm"), 120)
        assert waiting.may_answer == ["wang-chief"]
        state = run_state(run_id)
        assert state.name == "Suspended", "from a deployment a wait frees its process"
        assert Counter.calls == {"/block": 1}

        from flows.answers import answer_step

        refused = answer_step(str(run_id), by="zhao-dispatch", values={"safe": "yes"})
        assert not refused.ok
        pending, answer = doc.lines("answer")  # as the document answers: the CLI, with the CLI's settings
        assert str(run_id) in production.run(doc.argv(pending))
        production.run(doc.argv(answer.replace("INCIDENT_ID", str(run_id)).replace("PERSON", "wang-chief")
                                .replace("field=value", "safe=yes")))
        final = wait_until("the incident to finish", lambda: (s := run_state(run_id)).is_final() and s, 120)
        assert final.is_completed(), production.log("worker-a")
        tasks = task_states(run_id)
    assert Counter.calls == {"/block": 1, "/restore": 1}
    assert tasks["block-address"] == ["Completed", "Cached"], tasks
    assert tasks["tell-dispatch"] == ["Completed", "Cached"], tasks
    assert tasks["restore"] == ["Completed"], tasks
    archived = list((production.incidents / "prod-block").glob(f"*{run_id}*.json"))
    assert archived, "the incident is archived in the shared folder"


def test_a_worker_killed_while_a_step_waits_loses_nothing(production, firewall):
    """Blocking waits (RUNBOOK_SUSPEND_WAITS=false): the process is killed mid-incident, the answer arrives
    while no worker runs, `runbook recover` reschedules, a new worker finishes it; each action ran once."""
    _, base_url = firewall
    first = production.worker("worker-b", RUNBOOK_SUSPEND_WAITS="false")
    with production.settings():
        from flows.launch import start_incident

        run = start_incident("prod-block", {"base_url": base_url}, idempotency_key="kill-test", incident="kill-test")
        wait_until("the confirm step", lambda: waiting_at(run.id, "confirm"), 120)
        assert run_state(run.id).name == "Paused"
        assert Counter.calls == {"/block": 1}

        Procs.kill(first)  # the machine goes down: the worker and the flow's process
        from flows.answers import answer_step

        assert answer_step(str(run.id), by="wang-chief", values={"safe": "yes"}).ok  # the chief answers meanwhile
        time.sleep(2)
        assert run_state(run.id).name == "Running", "nobody runs it: it is orphaned"

        recovered = subprocess.run([sys.executable, "-m", "cli.main", "recover", str(run.id)], cwd=ROOT,
                                   env=production.env("cli"),
                                   capture_output=True, text=True, timeout=120)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        production.worker("worker-c", RUNBOOK_SUSPEND_WAITS="false")
        final = wait_until("the incident to finish", lambda: (s := run_state(run.id)).is_final() and s, 180)
        assert final.is_completed(), production.log("worker-c")
        tasks = task_states(run.id)
    assert Counter.calls == {"/block": 1, "/restore": 1}, "every completed action ran exactly once"
    assert tasks["block-address"] == ["Completed", "Cached"], tasks
    assert tasks["restore"] == ["Completed"], tasks
    # the archive tells the whole story: the attempt that was killed and the one that finished
    archived = wait_until("the archive", lambda: list((production.incidents / "prod-block").glob(f"*{run.id}*.json")), 30)
    record = IncidentRecord.model_validate_json(archived[0].read_text(encoding="utf-8"))
    kinds = record.kinds()
    assert kinds.count("incident.started") == 1 and kinds.count("incident.resumed") == 1, kinds  # one incident, two attempts
    assert kinds.index("step.waiting") < kinds.index("incident.resumed"), "the first attempt's wait comes first"
    assert kinds.count("step.answered") == 1, kinds
    assert [e.at for e in record.journal] == sorted(e.at for e in record.journal)


def test_the_watcher_escalates_and_expires_a_suspended_wait(production, firewall):
    _, base_url = firewall
    production.worker("worker-d")
    production.watcher()
    with production.settings():
        from flows.launch import start_incident

        run = start_incident("prod-expiry", {"base_url": base_url})
        final = wait_until("the wait to expire", lambda: (s := run_state(run.id)).is_final() and s, 240)
        assert final.name == "Expired", final.message
        tasks = task_states(run.id)
    assert Counter.calls == {"/block": 1, "/expired": 1}
    archived = wait_until("the archive", lambda: list((production.incidents / "prod-expiry").glob(f"*{run.id}*.json")), 30)
    record = IncidentRecord.model_validate_json(archived[0].read_text(encoding="utf-8"))
    assert "step.expired" in record.kinds()
    # two attempts: the first suspends; the watcher pages the tier itself (no process, no concurrency slot),
    # then wakes the run for the expiry; the action before the wait ran once
    assert tasks["block-address"] == ["Completed", "Cached"], tasks
    assert record.kinds().count("escalation.tier") == 1 and record.kinds().index("escalation.tier") < record.kinds().index("step.expired")


def test_each_part_stops_on_sigterm_and_the_watcher_says_it_is_alive(production):
    """Section 5: an idle worker, the watcher and the receiver each exit within 10 s of SIGTERM."""
    parts = {"worker-e": production.worker("worker-e"), "watcher": production.watcher()}
    production.intake()
    parts["intake"] = production.procs.all[-1]
    wait_until("the worker to start", lambda: "started" in production.log("worker-e"), 60)
    wait_until("a watcher pass", lambda: "pass done in" in production.log("watcher"), 60)
    assert "escalation watcher started: a pass every 5 s" in production.log("watcher")
    for name, proc in parts.items():
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the {name} did not stop within 10 s of SIGTERM:\n{production.log(name)}") from None
        print(f"{name} stopped {time.monotonic() - began:.1f} s after SIGTERM")
