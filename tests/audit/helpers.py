"""Shared pieces of the audit tests: the fixture runbook, a flaky endpoint, runs in the background.

Not a conftest: a conftest is imported before the session server is up, and Prefect reads its
settings when first imported.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefect import tags

from flows.answers import pending_steps
from flows.catalog import make_flow
from integrations.contacts import load_directory
from runbooks.loader import load_file

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "tests" / "fixtures" / "audit"
DIRECTORY = load_directory(ROOT / "config" / "contacts.yaml")


def audit_runbook(name: str = "audit-drill"):
    return load_file(AUDIT / f"{name}.yaml", DIRECTORY)


def audit_flow(name: str = "audit-drill"):
    return make_flow(audit_runbook(name))


class Background:
    """Run a flow in a thread, as a responder's machine would while people answer elsewhere."""

    def __init__(self, flow, **kwargs):
        self.state = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(flow, kwargs), daemon=True)
        self.thread.start()

    def _run(self, flow, kwargs):
        try:
            with tags("test", "audit"):
                self.state = flow(return_state=True, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, seconds: float = 90):
        self.thread.join(seconds)
        assert self.error is None, f"the run raised: {self.error!r}"
        assert self.state is not None, "the run did not finish"
        return self.state


def wait_for_step(step: str, seconds: float = 30, run_id: str | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in pending_steps():
            if p.step == step and (run_id is None or p.flow_run_id == run_id):
                return p
        time.sleep(0.3)
    raise AssertionError(f"no run waited at step {step} within {seconds} s")


class Flaky(BaseHTTPRequestHandler):
    """Fails the first two POSTs with 503, then answers 200: a step with `retries: 2` succeeds on its third try."""

    calls: list[float] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.calls.append(time.monotonic())
        status = 503 if len(self.calls) <= 2 else 200
        body = json.dumps({"blocked": status == 200}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def flaky_endpoint():
    """A local HTTP server whose POST /flaky fails twice before it succeeds; yields its base URL."""
    Flaky.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
