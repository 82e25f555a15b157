"""One real Prefect server (SQLite) for the whole test session.

Started as a subprocess with its own PREFECT_HOME, so tests, the CLI and served
flows all talk to it over HTTP exactly as a user's would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return proc, api
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited; see {home / 'server.log'}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("Prefect server did not become healthy in 90 s")


_server: dict = {}


def pytest_configure(config):
    """Start the server before any test module imports prefect: Prefect reads its settings at import.

    Under pytest-xdist each worker has a server of its own; the controller runs no tests and needs none.
    """
    import tempfile

    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return

    home = Path(tempfile.mkdtemp(prefix="runbook-tests-"))
    proc, api = _start_server(home)
    _server.update(proc=proc, api=api, home=home)
    os.environ.update({
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        "RUNBOOK_INCIDENTS_DIR": str(home / "incidents"),
        "RUNBOOK_STATE_DIR": str(home / "var"),
    })


def pytest_unconfigure(config):
    proc = _server.get("proc")
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(_server["home"], ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """Address of the session's Prefect API."""
    return _server["api"]


@pytest.fixture(scope="session")
def prefect_home() -> Path:
    return _server["home"]
