"""The production shape, for real, as docs/production.md sets it up: PostgreSQL with a password, a Prefect server
on it with basic auth, `prefect deploy --all`, process workers, the watcher, the alert receiver, and fake HTTP
endpoints that count what the runbooks did.

The commands and each part's settings are read from docs/production.md (`tests/production/doc.py`) and run as
written, with only this machine's addresses, ports and folders put in: the document cannot drift from the code.
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
from tests.production import doc

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


class Postgres:
    """A throwaway cluster: `socket` and `port` for psql (PGHOST/PGPORT), password logins over TCP."""

    def __init__(self, bindir: Path, socket: Path, port: int):
        self.bindir, self.socket, self.port = bindir, socket, port

    def env(self) -> dict[str, str]:
        """What makes the document's `runuser -u postgres -- psql` reach this cluster."""
        return {"PGHOST": str(self.socket), "PGPORT": str(self.port), **({} if os.geteuid() == 0 else {"PGUSER": "postgres"})}


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free port: trust on its socket, a password over TCP (as Debian's)."""
    yield from cluster()


def cluster():
    """The cluster `postgres` gives, for a module that needs one of its own (its own `prefect` role and database)."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install -y postgresql)")
    base = Path(tempfile.mkdtemp(prefix="runbook-pg-"))
    data, port = base / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                                 "--auth-host=scram-sha-256", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "start",
                                 "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"]),
                   check=True, capture_output=True)
    yield Postgres(bindir, base, port)
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
                try:
                    self.kill(proc, signal.SIGTERM)
                except subprocess.TimeoutExpired:  # a loaded machine: a part left running would take the next test's runs
                    self.kill(proc, signal.SIGKILL)
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


TOKEN = "intake-token-for-tests"
HOSTILE_PASSWORD = "p@ss/w+rd=:%x"  # what a generator may give; it must reach PostgreSQL intact through the URL


class Production:
    """docs/production.md, walked: the database, the server, the deployments, and the parts a test starts."""

    def __init__(self, pg: Postgres, runbooks: Path | None = None):
        self.pg = pg
        self.home = Path(tempfile.mkdtemp(prefix="runbook-prod-"))
        self.procs = Procs(self.home)
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.incidents = self.home / "incidents"  # one archive folder every worker shares
        self.runbooks = runbooks or FIXTURES
        self.overrides: dict[str, str] = {}  # a test's own value of a setting the document's tables name
        self.database_url = ""
        self.intake_url = ""

    def values(self) -> dict[str, str]:
        """This machine's value of every setting the document's tables name."""
        from flows.server import SERVER_SETTINGS  # imports Prefect: not while pytest loads this conftest (tests/conftest.py)

        return {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url, "PREFECT_SERVER_API_AUTH_STRING": AUTH,
            "PREFECT_UI_API_URL": self.api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.api, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_UI_URL": self.api.removesuffix("/api"),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "RUNBOOK_INCIDENTS_DIR": str(self.incidents),
            "RUNBOOK_STATE_DIR": str(self.home / "var"), "RUNBOOK_CONTACTS_FILE": str(ROOT / "config" / "contacts.yaml"),
            "RUNBOOK_SITE_FILE": str(ROOT / "config" / "site.yaml"), "RUNBOOK_ROUTES_FILE": str(ROOT / "config" / "routes.yaml"),
            "PREFECT_WORKER_QUERY_SECONDS": "1", "RUNBOOK_INTAKE_TOKEN": TOKEN, **SERVER_SETTINGS, **self.overrides,
        }

    def env(self, part: str, name: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of one part: exactly the settings its table in the document lists, plus the test's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
        values = self.values()
        unknown = [k for k in doc.settings(part) if k not in values]
        assert not unknown, f"docs/production.md lists {unknown} for the {part}; give them a value in Production.values()"
        env.update({k: values[k] for k in doc.settings(part)})
        env.update({  # the test's own: its runbooks, one Prefect home per process, faster polling and logs
            "RUNBOOK_RUNBOOKS_DIR": str(self.runbooks), "PREFECT_HOME": str(self.home / f"{name or part}-home"),
            "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5", "PYTHONPATH": str(ROOT),
        })
        env.update(extra)
        return env

    def shell(self, block: str, env: dict[str, str]) -> str:
        """Run a block of the document with bash, on this cluster; its standard output."""
        if os.geteuid() != 0:  # runuser is for root; the cluster's socket trusts this user as postgres too
            block = block.replace("runuser -u postgres -- ", "")
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env={**env, **self.pg.env()},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{block}\nfailed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def create_database(self) -> None:
        """Sections 1 and 2: the role with a generated password, the database, and the URL with the password encoded."""
        shim = self.home / "bin"
        shim.mkdir()
        (shim / "openssl").write_text(f"#!/bin/sh\nprintf '%s\\n' '{HOSTILE_PASSWORD}'\n")  # the generator gives a hard one
        (shim / "openssl").chmod(0o755)
        env = self.env("server")
        env["PATH"] = f"{shim}:{Path(sys.executable).parent}:{env['PATH']}"
        url = self.shell(doc.block("database") + "\n" + doc.block("database-url")
                         + '\nprintf "\\n%s" "$PREFECT_API_DATABASE_CONNECTION_URL"', env).splitlines()[-1]  # after psql's output
        assert ":5432/" in url, url
        self.database_url = url.replace(":5432/", f":{self.pg.port}/")

    def start_server(self) -> None:
        argv = doc.with_options(doc.command("server"), **{"--host": "127.0.0.1", "--port": str(self.port)})
        proc = self.procs.start("server", argv, self.env("server", PREFECT_SERVER_UI_ENABLED="false"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"Prefect server exited:\n{self.log('server')}"
            time.sleep(0.5)
        raise AssertionError("the Prefect server on PostgreSQL did not start")

    def run(self, argv: list[str], part: str = "cli") -> str:
        """A command as an operator types it (with the part's settings); its output."""
        out = subprocess.run(argv, cwd=ROOT, env=self.env(part), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def deploy(self) -> None:
        """Section 3, with a prefect.yaml of the test's runbooks instead of the checkout's."""
        prefect_file = self.home / "prefect.yaml"
        generate, create_pool, deploy = doc.lines("deploy")
        assert generate.startswith("python -m flows.deploy"), generate
        self.run(doc.argv("python -m flows.deploy") + ["--output", str(prefect_file)])
        self.run(doc.argv(create_pool))
        self.run(doc.argv(deploy) + ["--prefect-file", str(prefect_file)])

    def worker(self, name: str, **extra: str) -> subprocess.Popen:
        argv = doc.with_options(doc.command("worker"), **{"--name": name})
        return self.procs.start(name, argv, self.env("worker", name, **extra))

    def intake(self) -> str:
        port = free_port()
        argv = doc.with_options(doc.command("intake"), **{"--host": "127.0.0.1", "--port": str(port)})
        self.procs.start("intake", argv, self.env("intake"))
        self.intake_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.intake_url}/healthz", timeout=1).status_code == 200:
                    return self.intake_url
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"the alert receiver did not start:\n{self.log('intake')}")

    def send_alert(self, labels: dict[str, str], **fields) -> httpx.Response:
        """The document's first alert (its address, headers and body), with the test's labels."""
        sent = doc.curl("alert")
        body = {**sent.body, **fields, "labels": labels}
        url = sent.url.replace("http://127.0.0.1:8787", self.intake_url)
        headers = {k: v.replace("$RUNBOOK_INTAKE_TOKEN", TOKEN) for k, v in sent.headers.items()}
        return httpx.request(sent.method, url, json=body, headers=headers, timeout=10)

    def watcher(self, **extra: str) -> subprocess.Popen:
        return self.procs.start("watcher", doc.command("watcher"), self.env("watcher", **extra))

    def settings(self):
        """Talk to this server from the test process."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api, PREFECT_API_AUTH_STRING: AUTH})

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def production_stack(postgres):
    yield from stack(postgres)


def stack(postgres: Postgres, runbooks: Path | None = None):
    """`production_stack`, for a module that deploys runbooks of its own (RUNBOOK_RUNBOOKS_DIR of every part)."""
    prod = Production(postgres, runbooks)
    try:
        prod.create_database()
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
