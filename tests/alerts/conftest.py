"""Helpers for the alert intake tests: a recording stand-in for Prefect, and the receiver app."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

ROUTES = """
routes:
  - name: his
    match: ['alertname=~"HIS.*|His.*"', "env!=staging"]
    runbook: hospital-his-outage
    parameters:
      system: labels.service
      site: {label: site, default: main}
      summary: annotations.summary
      reporter: {value: monitoring}
    severity: {critical: "1", high: "2", warning: "3"}
fallback: {key: runbook}
"""


def fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / "alerts" / name).read_text(encoding="utf-8"))


def wait_until(check, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FakePrefect:
    """Records what the intake asks of Prefect; honours idempotency keys like run_deployment does.

    ``down = True`` makes every call fail the way an unreachable API does."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_key: dict[str, str] = {}
        self.starts: list[dict] = []          # every call, including ones answered from the key
        self.runs: list[dict] = []            # distinct runs created
        self.resolutions: list[tuple[str, dict]] = []
        self.events: list[dict] = []
        self.closed: set[str] = set()
        self.bulk_calls: list[list[str]] = []  # the idempotency keys of each bulk create
        self.down = False

    def _check(self):
        if self.down:
            raise httpx.ConnectError("All connection attempts failed")

    def start_incident(self, runbook_id, parameters, severity=None, drill=False, idempotency_key=None, alert=None, incident=None):
        self._check()
        call = dict(runbook=runbook_id, parameters=parameters, severity=severity, drill=drill,
                    idempotency_key=idempotency_key, alert=alert, incident=incident)
        with self.lock:
            self.starts.append(call)
            if idempotency_key in self.by_key:
                return SimpleNamespace(id=uuid.UUID(self.by_key[idempotency_key]))
            run_id = str(uuid.uuid4())
            self.by_key[idempotency_key] = run_id
            self.runs.append({**call, "id": run_id})
        return SimpleNamespace(id=uuid.UUID(run_id))

    def start_incidents(self, runbook_id, starts):
        """Prefect's bulk create, as the Launcher uses it: the run of each key (an earlier one for a known key)."""
        self._check()
        with self.lock:
            self.bulk_calls.append([s["idempotency_key"] for s in starts])
        return {s["idempotency_key"]: self.start_incident(runbook_id, **s).id for s in starts}

    def open_runs(self, flow_run_ids):
        self._check()
        return {run_id for run_id in flow_run_ids if run_id not in self.closed}

    def deliver_resolution(self, flow_run_id, alert):
        self._check()
        self.resolutions.append((flow_run_id, alert))

    def run_is_open(self, flow_run_id):
        self._check()
        return flow_run_id not in self.closed

    def emit(self, alert, outcome, flow_run_id, runbook):
        self.events.append({"event": f"runbook.alert.{alert.status}", "fingerprint": alert.fingerprint,
                            "outcome": outcome, "flow_run_id": flow_run_id, "runbook": runbook})

    def health(self):
        return httpx.ConnectError("All connection attempts failed") if self.down else None

    def close_all(self):
        self.closed.update(r["id"] for r in self.runs)


@pytest.fixture
def prefect_fake() -> FakePrefect:
    return FakePrefect()


@pytest.fixture
def runbooks_dir() -> Path:
    return FIXTURES / "runbooks"


@pytest.fixture
def make_settings(tmp_path, runbooks_dir):
    from runbooks.settings import Settings

    def make(routes: str = ROUTES, state: str = "var", **kw):
        routes_file = tmp_path / "routes.yaml"
        routes_file.write_text(routes, encoding="utf-8")
        return Settings(state_dir=tmp_path / state, routes_file=routes_file, runbooks_dir=runbooks_dir, **kw)

    return make


@pytest.fixture
def make_client(make_settings, prefect_fake):
    """A TestClient on create_app with the fake Prefect; the spool drainer runs in the background."""
    from fastapi.testclient import TestClient

    from app.intake import Intake
    from integrations.alerts.store import Store
    from app.web import create_app

    clients = []

    def make(settings=None, fake: FakePrefect | None = None, **app_kw):
        settings = settings or make_settings()
        fake = fake or prefect_fake
        intake = Intake(Store(settings.state_dir), start_incident=fake.start_incident,
                        deliver_resolution=fake.deliver_resolution, run_is_open=fake.run_is_open, emit=fake.emit,
                        health=fake.health)
        client = TestClient(create_app(settings, intake=intake, **app_kw))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        stop(c)


def stop(client) -> None:
    """Shut the app down (lifespan exit) once; the spool stays on disk."""
    if not getattr(client, "_stopped", False):
        client._stopped = True
        client.__exit__(None, None, None)


def drained(client, timeout: float = 10):
    """Wait until the app's spool is empty."""
    store = client.app.state.store
    wait_until(lambda: store.pending_count() == 0, timeout, "the spool to drain")
