"""The production shape, for real: PostgreSQL, a Prefect server on it with basic auth, `prefect deploy --all`,
process workers, the alert receiver, and fake HTTP endpoints that count what the runbooks did.

PostgreSQL comes from Debian's packages (`apt-get install -y postgresql`); without its binaries these tests skip.
Everything runs as child processes with its own environment, as it would on servers; the test talks to the
Prefect server through `temporary_settings`, so the session's SQLite server (tests/conftest.py) is left alone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "production"
AUTH = "runbooks:s3cret-for-tests"


def pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--"] + cmd


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free port; yields its asyncpg URL for Prefect."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install -y postgresql)")
    base = Path(tempfile.mkdtemp(prefix="runbook-pg-"))
    data, port = base / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "start",
                                 "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "postgres", "prefect"]),
                   check=True, capture_output=True)
    yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


class Procs:
    """Child processes, each in its own session so a kill takes its children with it."""

    def __init__(self, logs: Path):
        self.logs, self.all = logs, []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.all.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
        """Kill a process, its group and every descendant (as if the machine went down)."""
        pids = [proc.pid] + descendants(proc.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(20)

    def stop_all(self, keep: int = 0) -> None:
        """Stop every process started after the first `keep` ones."""
        for proc in reversed(self.all[keep:]):
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        del self.all[keep:]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Production:
    """A Prefect server on PostgreSQL with basic auth, the fixture runbooks deployed to the `runbooks` pool."""

    def __init__(self, database_url: str):
        self.home = Path(tempfile.mkdtemp(prefix="runbook-prod-"))
        self.procs = Procs(self.home)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.storage = self.home / "results"      # one result storage every worker shares
        self.incidents = self.home / "incidents"  # one archive folder every worker shares
        self.database_url = database_url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
        env.update({
            "PREFECT_API_URL": self.api, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.storage), "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "RUNBOOK_RUNBOOKS_DIR": str(FIXTURES), "RUNBOOK_INCIDENTS_DIR": str(self.incidents),
            "RUNBOOK_STATE_DIR": str(self.home / "var"), "PYTHONPATH": str(ROOT),
        })
        env.update(extra)
        return env

    def start_server(self) -> None:
        env = self.env(PREFECT_HOME=str(self.home / "server-home"), PREFECT_API_DATABASE_CONNECTION_URL=self.database_url,
                       PREFECT_SERVER_API_AUTH_STRING=AUTH, PREFECT_SERVER_UI_ENABLED="false")
        env.pop("PREFECT_API_URL")
        proc = self.procs.start("server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                           "--port", str(self.port)], env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"Prefect server exited; see {self.home / 'server.log'}"
            time.sleep(0.5)
        raise AssertionError("the Prefect server on PostgreSQL did not start")

    def prefect(self, *args: str) -> str:
        """`prefect ...` against this server (as an operator would type it)."""
        out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=ROOT,
                             env=self.env(PREFECT_HOME=str(self.home / "cli-home")), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def deploy(self) -> None:
        prefect_file = self.home / "prefect.yaml"
        subprocess.run([sys.executable, "-m", "flows.deploy", "--output", str(prefect_file)], cwd=ROOT,
                       env=self.env(), check=True, capture_output=True)
        self.prefect("work-pool", "create", "runbooks", "--type", "process")
        self.prefect("deploy", "--all", "--prefect-file", str(prefect_file))

    def worker(self, name: str, **extra: str) -> subprocess.Popen:
        env = self.env(PREFECT_HOME=str(self.home / f"{name}-home"), **extra)
        return self.procs.start(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", "runbooks",
                                       "--type", "process", "--name", name], env)

    def intake(self) -> str:
        port = free_port()
        self.procs.start("intake", [sys.executable, "-m", "app.stack", "intake", "127.0.0.1", str(port)],
                         self.env(PREFECT_HOME=str(self.home / "intake-home")))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("the alert receiver did not start")

    def watcher(self, seconds: float = 1) -> subprocess.Popen:
        return self.procs.start("watcher", [sys.executable, "-m", "app.stack", "watcher", str(seconds)],
                                self.env(PREFECT_HOME=str(self.home / "watcher-home")))

    def settings(self):
        """Talk to this server from the test process."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api, PREFECT_API_AUTH_STRING: AUTH})

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def production_stack(postgres):
    prod = Production(postgres)
    try:
        prod.start_server()
        prod.deploy()
        yield prod
    finally:
        prod.procs.stop_all()
        if os.environ.get("RUNBOOK_KEEP_TEST_HOME"):
            print(f"kept {prod.home}")
        else:
            shutil.rmtree(prod.home, ignore_errors=True)


@pytest.fixture
def production(production_stack):
    """The module's server; the workers, watcher and receiver a test starts are stopped after it."""
    yield production_stack
    production_stack.procs.stop_all(keep=1)


class Counter(BaseHTTPRequestHandler):
    """A site's firewall: counts every call by path."""

    calls: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        with self.lock:
            self.calls[self.path] = self.calls.get(self.path, 0) + 1
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def firewall():
    Counter.calls = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
