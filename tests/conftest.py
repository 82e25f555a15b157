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
import threading
import time
from pathlib import Path

import httpx
import pytest

from app import prefect_server  # imports no Prefect

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
    proc = subprocess.Popen(prefect_server.command("127.0.0.1", port),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240  # a loaded two-core machine has been seen to need over 90 s
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
    raise RuntimeError("Prefect server did not become healthy in 240 s")


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
    _server["env"] = dict(os.environ)  # what the served stack starts with, whatever a test patches later
    if "prefect.context" in sys.modules:
        # A conftest pytest loaded before this hook imported Prefect (the conftests of the paths given on the command
        # line load first: tests/production's, tests/notify_e2e's), and Prefect built its settings then, without
        # these: every later test's client would start a temporary server of its own on another database, and a
        # state it set would reach no runner. Prefect's way to read them again:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


class ServedStack:
    """The project's runbooks served as production has them, against the session's server.

    `python -m app.stack serve` (every runbook of the settings' runbooks_dir as the deployment `<id>/runbook`)
    and `python -m app.stack watcher 1` (the escalation watcher, every second); each a subprocess in its own
    process group with its log in the session's home.
    """

    def __init__(self, api: str, home: Path, env: dict[str, str], runbook_ids: list[str]):
        self.api, self.home, self.runbook_ids = api, home, runbook_ids
        self.env = {**env, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PYTHONUNBUFFERED": "1"}
        self.logs = {"serve": home / "stack-serve.log", "watcher": home / "stack-watcher.log"}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, timeout: float = 180) -> "ServedStack":
        from datetime import datetime, timezone

        began = datetime.now(timezone.utc)
        for part, args in (("serve", ["serve"]), ("watcher", ["watcher", "1"])):
            with open(self.logs[part], "a") as log:
                self.procs[part] = subprocess.Popen([sys.executable, "-m", "app.stack", *args], cwd=ROOT, env=self.env,
                                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        missing = list(self.runbook_ids)
        while missing:
            self.check()
            missing = [rid for rid in missing if not self._served_since(rid, began)]
            if missing and time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"not served within {timeout:.0f} s: {missing}\n{self.tail('serve')}")
            time.sleep(0.5)
        return self

    def _served_since(self, runbook_id: str, began) -> bool:
        """The deployment exists and this stack's serve registered it (not an older one of the same name)."""
        from datetime import datetime

        try:
            r = httpx.get(f"{self.api}/deployments/name/{runbook_id}/runbook", timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and datetime.fromisoformat(r.json()["updated"]) >= began

    def check(self) -> None:
        """Raise when a part of the stack has exited."""
        for part, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"`python -m app.stack {part}` exited ({proc.returncode})\n{self.tail(part)}")

    def tail(self, part: str, chars: int = 3000) -> str:
        try:
            text = self.logs[part].read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return f"---- {self.logs[part]} (end) ----\n{text[-chars:]}"

    def stop(self) -> None:
        """SIGTERM to each process group (serve cancels its runs and pauses its deployments), SIGKILL after 20 s."""
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="session")
def served_stack():
    """The served stack of this session (of this xdist worker), started on first use and stopped at the end.

    It serves what this process's flows.catalog holds (same environment, same working directory: same runbooks)."""
    from flows.catalog import RUNBOOKS

    stack = ServedStack(_server["api"], _server["home"], _server["env"], sorted(RUNBOOKS))
    stack.start()
    yield stack
    stack.stop()


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


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The sleeps of the test's own thread, recorded instead of slept; the process's other threads sleep for real
    (time.sleep is the one function of the time module every module shares)."""
    calls: list[float] = []
    sleep = time.sleep
    monkeypatch.setattr(time, "sleep",
                        lambda s: calls.append(s) if threading.current_thread() is threading.main_thread() else sleep(s))
    return calls
