"""A real Prometheus Alertmanager -> our receiver -> a real served runbook, all over HTTP.

Alertmanager (group_wait/group_interval 1 s, repeat_interval 2 s, bearer token in
http_config) notifies the receiver, run as `python -m app.stack intake` with the
fixture routes; the fixture runbook `intake-watch` is served by `python -m app.stack
serve` against the session's Prefect server. Its first step reports the parameters it
was given to a recorder; its second is a `check` with `alert_resolved: true`. We check:
one flow run with the routed parameters, repeats start nothing, and the resolution
Alertmanager sends reaches the run, whose check holds and which completes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.alerts.procs import TOKEN, Receiver, Recorder, Served, free_port, wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = [pytest.mark.alertmanager, pytest.mark.server,
              pytest.mark.skipif(ALERTMANAGER is None, reason="needs Alertmanager: apt-get install prometheus-alertmanager")]


@pytest.fixture(scope="module")
def served(prefect_api, prefect_home, tmp_path_factory):
    """tests/fixtures/intake/runbooks served as `<id>/runbook` on the session's server."""
    log = tmp_path_factory.mktemp("served") / "serve.log"
    served = Served(prefect_api, prefect_home, log=log).start(["intake-watch"])
    yield served
    served.stop()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def receiver(prefect_api, prefect_home, tmp_path):
    r = Receiver(prefect_api, prefect_home, tmp_path / "var", log=tmp_path / "receiver.log").start()
    yield r
    r.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver):
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(f"""
route:
  receiver: runbooks
  group_by: [alertname, env]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: runbooks
    webhook_configs:
      - url: {receiver.url}/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
""", encoding="utf-8")
    log = open(tmp_path / "alertmanager.log", "w")
    proc = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=debug"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"alertmanager exited; see {tmp_path / 'alertmanager.log'}")
        try:
            return httpx.get(f"{api}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, "alertmanager to be ready")
    yield api
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def post_alert(api: str, labels: dict, annotations: dict, starts: datetime, ends: datetime) -> None:
    """POST /api/v2/alerts, as Prometheus does; the same labels and startsAt are the same alert."""
    alert = {"labels": labels, "annotations": annotations, "startsAt": starts.isoformat(), "endsAt": ends.isoformat(),
             "generatorURL": "http://prometheus.test/graph?g0.expr=up"}
    r = httpx.post(f"{api}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


def runs_of(system: str):
    """The intake-watch runs whose routed `system` parameter is ours (the session server is shared)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["intake-watch"])))
    return [r for r in runs if (r.parameters.get("parameters") or {}).get("system") == system]


def read_run(run_id):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def task_runs_named(run_id, name: str):
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id])))
    return [t for t in runs if t.name == name]


def test_alertmanager_starts_the_served_runbook_once_and_its_resolution_completes_the_run(
        alertmanager, receiver, served, recorder):
    from flows.record.archive import find_record

    system = f"his-core-{uuid.uuid4().hex[:8]}"
    labels = {"alertname": "IntakeWatchDown", "env": "prod", "service": system, "site": "east-campus",
              "severity": "critical", "instance": "his-db-01:9100"}
    annotations = {"summary": "HIS core unreachable", "recorder": recorder.url}
    starts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    post_alert(alertmanager, labels, annotations, starts, datetime.now(timezone.utc) + timedelta(hours=1))

    # one flow run of the routed runbook, with the routed parameters
    (run,) = wait_for(lambda: runs_of(system), 30, "Alertmanager's notification to start a flow run")
    assert run.parameters["parameters"] == {"site": "east-campus", "system": system, "recorder": recorder.url}
    assert run.parameters["severity"] == "1" and run.parameters["drill"] is False
    alert = run.parameters["alert"]
    assert alert["source"] == "alertmanager" and alert["status"] == "firing"
    assert alert["group_key"].endswith('{alertname="IntakeWatchDown", env="prod"}')
    assert run.parameters["incident"].startswith("IntakeWatchDown #")
    assert run.idempotency_key.startswith("alert:intake-watch:") and run.idempotency_key.endswith(":1")
    assert "runbook:intake-watch" in run.tags

    # the served run's first step ran with them
    (call,) = wait_for(lambda: recorder.for_run(run.id), 60, "the runbook's first step to report")
    assert call["body"] == {"site": "east-campus", "system": system, "severity": "1", "run": str(run.id),
                            "fingerprint": alert["fingerprint"]}

    # the run goes on to its check, which waits for the resolution
    (check,) = wait_for(lambda: [t for t in task_runs_named(run.id, "await-resolution") if t.state and t.state.is_running()],
                        30, "the check step to be waiting")

    # repeat_interval 2 s: Alertmanager notifies again and again while the check waits; nothing new starts
    def done():
        return [r["outcome"] for r in receiver.spool() if r["state"] == "done"]

    seen = len(done())
    wait_for(lambda: len(done()) >= max(seen + 2, 3), 30, "Alertmanager to repeat the notification")
    outcomes = done()
    assert outcomes[0] == f"started {run.id}"
    assert set(outcomes[1:]) == {f"joined {run.id}"}
    assert len(runs_of(system)) == 1
    assert read_run(run.id).state.is_running()

    # the alert ends: Alertmanager sends the resolution, the check holds, the run completes
    post_alert(alertmanager, labels, annotations, starts, datetime.now(timezone.utc) - timedelta(seconds=1))
    state = wait_for(lambda: (s := read_run(run.id).state).is_final() and s, 60, "the run to finish after the resolution")
    assert state.is_completed(), state.message
    (held_run,) = task_runs_named(run.id, "await-resolution")
    assert held_run.id == check.id and held_run.state.is_completed()
    assert f"resolution-delivered {run.id}" in [r["outcome"] for r in receiver.spool()]
    assert len(runs_of(system)) == 1

    record = wait_for(lambda: find_record(str(run.id)), 30, "the incident's archive record")
    held = record.steps["await-resolution"]
    assert held["held"] is True and held["by"] == "alert-resolved" and held["probes"] == 0
    assert held["alert"]["status"] == "resolved" and held["alert"]["fingerprint"] == alert["fingerprint"]
    assert held["alert"]["ends_at"] is not None
    done = [e for e in record.entries("step.done") if e.step == "await-resolution"]
    assert done and "by=alert-resolved" in done[0].text
    # Prefect's side of the journal: the resolution as a flow run input, in the record's history
    resolved = [h for h in record.history if h.kind == "alert.resolved"]
    assert len(resolved) == 1 and resolved[0].data["alert"]["fingerprint"] == alert["fingerprint"]
    assert record.steps["record-alert"]["result"]["body"]["recorded"]["system"] == system
