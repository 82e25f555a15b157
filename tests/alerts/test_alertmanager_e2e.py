"""A real Prometheus Alertmanager notifies our receiver over HTTP with a bearer token.

Alertmanager groups, waits, repeats every repeat_interval and sends the resolution;
we check one incident is started with the routed runbook and parameters, repeats start
nothing new, and the resolution reaches deliver_resolution. Prefect is the recording
stand-in here (tests/alerts/test_prefect.py covers the real server side).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.alerts.conftest import wait_until

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = [pytest.mark.alertmanager,
              pytest.mark.skipif(ALERTMANAGER is None, reason="needs Alertmanager: apt-get install prometheus-alertmanager")]

TOKEN = "am-e2e-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receiver(make_settings, prefect_fake):
    """Our app served by uvicorn on a real port, as `runbook intake` would."""
    from integrations.alerts.intake import Intake
    from integrations.alerts.store import Store
    from integrations.web import create_app

    settings = make_settings(intake_token=TOKEN)
    intake = Intake(Store(settings.state_dir), start_incident=prefect_fake.start_incident,
                    deliver_resolution=prefect_fake.deliver_resolution, run_is_open=prefect_fake.run_is_open,
                    emit=prefect_fake.emit)
    app = create_app(settings, intake=intake)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def alertmanager(tmp_path: Path, receiver):
    url, _ = receiver
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
      - url: {url}/alerts/alertmanager
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

    wait_until(ready, 30, "alertmanager to be ready")
    yield api
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def post_alert(api: str, ends_at: datetime) -> None:
    alert = {
        "labels": {"alertname": "HISDown", "env": "prod", "service": "his-core", "site": "east-campus",
                   "severity": "critical", "instance": "his-db-01:9100"},
        "annotations": {"summary": "HIS core unreachable"},
        "startsAt": STARTS.isoformat(),
        "endsAt": ends_at.isoformat(),
        "generatorURL": "http://prometheus.test/graph?g0.expr=up",
    }
    r = httpx.post(f"{api}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


STARTS = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)


def test_alertmanager_starts_one_incident_and_delivers_the_resolution(alertmanager, receiver, prefect_fake):
    _, app = receiver
    store = app.state.store
    post_alert(alertmanager, datetime.now(timezone.utc) + timedelta(hours=1))

    wait_until(lambda: prefect_fake.runs, 20, "Alertmanager's notification to start an incident")
    (run,) = prefect_fake.runs
    assert run["runbook"] == "hospital-his-outage" and run["severity"] == "1"
    assert run["parameters"] == {"system": "his-core", "site": "east-campus", "summary": "HIS core unreachable",
                                 "reporter": "monitoring"}
    assert run["alert"]["source"] == "alertmanager" and run["alert"]["group_key"].endswith('{alertname="HISDown", env="prod"}')

    # repeat_interval 2s: Alertmanager notifies again; nothing new starts
    wait_until(lambda: len(store.spool_rows()) >= 3, 20, "Alertmanager to repeat the notification")
    wait_until(lambda: store.pending_count() == 0, 10, "the spool to drain")
    assert len(prefect_fake.runs) == 1
    assert {e["outcome"] for e in prefect_fake.events} == {"started", "joined"}

    # the alert ends: Alertmanager sends the resolution, which reaches the incident once
    post_alert(alertmanager, datetime.now(timezone.utc) - timedelta(seconds=1))
    wait_until(lambda: prefect_fake.resolutions, 20, "the resolution to reach deliver_resolution")
    ((run_id, resolved),) = prefect_fake.resolutions
    assert run_id == run["id"] and resolved["status"] == "resolved" and resolved["ends_at"]
    assert len(prefect_fake.runs) == 1
