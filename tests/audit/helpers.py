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

from flows.catalog import make_flow
from integrations.contacts import load_directory
from runbooks.loader import load_file

from tests.drill import Background as _Background, wait_for_step  # noqa: F401  (wait_for_step is shared with the audit tests)

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "tests" / "fixtures" / "audit"

DIRECTORY = load_directory(ROOT / "config" / "contacts.yaml")


def audit_runbook(name: str = "audit-drill"):
    return load_file(AUDIT / f"{name}.yaml", DIRECTORY)


def audit_flow(name: str = "audit-drill"):
    return make_flow(audit_runbook(name))


class Background(_Background):
    def __init__(self, flow, **kwargs):
        super().__init__(flow, test_tags=("test", "audit"), **kwargs)


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
