"""Real processes for the intake's end-to-end tests and bench/alerts.py.

A Prefect server of our own (``prefect server start`` with its own PREFECT_HOME),
the runbooks served from a fixture folder (``python -m app.stack serve``), the
receiver (``python -m app.stack intake HOST PORT``), each a subprocess with an
explicit environment and a log file; a small HTTP recorder the fixture runbook's
first step reports to; and the few Prefect REST calls the tests need when the
server is not the one this process's Prefect client is bound to.

Nothing here imports prefect: Prefect reads its settings at import, and these
helpers talk to whichever server they are given.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

from app import prefect_server


ROOT = Path(__file__).resolve().parent.parent.parent
INTAKE = ROOT / "tests" / "fixtures" / "intake"
INTAKE_RUNBOOKS = INTAKE / "runbooks"
INTAKE_ROUTES = INTAKE / "routes.yaml"
TOKEN = "intake-e2e-token"

# the parameters every runbook flow takes (flows/catalog.py make_flow); the unserved deployments declare them too
RUNBOOK_FLOW_PARAMETERS = ["parameters", "severity", "drill", "time_scale", "auto", "answers", "incident", "alert"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a process started with start_new_session=True, its children too."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def base_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with Prefect pointed at api_url; RUNBOOK_* and PREFECT_* from extra win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run_process(run_id: str, recorded: str | None) -> int | None:
    """The live process running a flow run: the one recorded on the run (`infrastructure_pid`, `host:pid` from the
    warm runner or a plain pid from a worker), else the process whose environment names the run (how Prefect's own
    starters hand it over). A zombie (exited, not yet reaped) counts as gone."""
    pid = (recorded or "").rpartition(":")[2]
    if pid.isdigit():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return int(pid)
        except (OSError, IndexError):
            pass
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    return int(entry.name)
            except OSError:
                continue
    return None


class PrefectServer:
    """`prefect server start` on a fixed port with its own home; stop() and start() again keep its database."""

    def __init__(self, home: Path, port: int | None = None, **env: str):
        self.home, self.port = Path(home), port or free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = env  # extra PREFECT_* settings of the server
        self.proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 90) -> "PrefectServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_UI_API_URL": self.api, "PREFECT_SERVER_UI_ENABLED": "false", **self.env})
        log = open(self.home / "server.log", "a")
        self.proc = subprocess.Popen(prefect_server.command("127.0.0.1", self.port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.home, start_new_session=True)
        log.close()

        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({self.proc.returncode}); see {self.home / 'server.log'}")
            try:
                return httpx.get(f"{self.api}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, "the Prefect server to answer", every=0.3)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def reachable(self) -> bool:
        try:
            return httpx.get(f"{self.api}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class Served:
    """`python -m app.stack serve` over a folder of runbooks: each becomes the deployment `<id>/runbook`."""

    def __init__(self, api: str, home: Path, runbooks_dir: Path = INTAKE_RUNBOOKS, log: Path | None = None, **env: str):
        self.api = api
        self.env = base_env(api, home, RUNBOOK_RUNBOOKS_DIR=str(runbooks_dir), **env)
        self.log = log or Path(home) / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self, expect: list[str], timeout: float = 90) -> "Served":
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.stack", "serve"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def served():
            if self.proc.poll() is not None:
                raise RuntimeError(f"`app.stack serve` exited ({self.proc.returncode}); see {self.log}")
            return all(deployment_id(self.api, rid) for rid in expect)

        wait_for(served, timeout, f"{expect} to be served", every=0.5)
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


class Receiver:
    """`python -m app.stack intake 127.0.0.1 PORT` with its state dir, routes and token; restartable on its port."""

    def __init__(self, api: str, home: Path, state_dir: Path, *, routes: Path = INTAKE_ROUTES,
                 runbooks_dir: Path = INTAKE_RUNBOOKS, token: str = TOKEN, port: int | None = None,
                 log: Path | None = None, **env: str):
        self.port = port or free_port()
        self.state_dir = Path(state_dir)
        self.token = token
        self.log = log or self.state_dir.parent / f"receiver-{self.port}.log"
        self.env = base_env(api, home, RUNBOOK_STATE_DIR=str(state_dir), RUNBOOK_ROUTES_FILE=str(routes),
                            RUNBOOK_RUNBOOKS_DIR=str(runbooks_dir), RUNBOOK_INTAKE_TOKEN=token, **env)
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, api: str | None = None, timeout: float = 60) -> "Receiver":
        env = {**self.env, "PREFECT_API_URL": api} if api else self.env
        with open(self.log, "a") as log:
            log.write(f"---- start, PREFECT_API_URL={env['PREFECT_API_URL']}\n")
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "app.stack", "intake", "127.0.0.1", str(self.port)],
                                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the receiver exited ({self.proc.returncode}); see {self.log}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "the receiver to answer", every=0.2)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flushing; whatever the process held in memory is gone."""
        stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop_process(self.proc)
        self.http.close()

    def healthz(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=5).json()

    def post(self, source: str, body: Any) -> httpx.Response:
        return self.http.post(f"/alerts/{source}", json=body)

    def spool(self) -> list[dict[str, Any]]:
        from integrations.alerts.store import Store

        return Store(self.state_dir).spool_rows()

    def pending(self) -> int:
        from integrations.alerts.store import Store

        return Store(self.state_dir).pending_count()


class SlowLink:
    """A TCP relay to a server that holds each chunk a client sends for `delay` seconds: every request
    through it is slow, so a test can act while a drain is half done. `api` is the server's API through it."""

    def __init__(self, api: str, delay: float):
        target = httpx.URL(api)
        self.target, self.delay, self.path = (target.host, target.port), delay, target.path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.api = f"http://127.0.0.1:{self.listener.getsockname()[1]}{self.path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client, upstream, self.delay), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


class Recorder:
    """What the fixture runbook's first step reports (`POST <recorder>/started`), with when it arrived."""

    def __init__(self):
        self.calls: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                size = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(size) or b"null")
                recorder.calls.append({"at": time.time(), "path": self.path, "body": body})
                data = json.dumps({"recorded": body}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["body"].get("run") == str(run_id)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- Prefect over REST


def rest(method: str, url: str, *, attempts_for: float = 30, **kw: Any) -> httpx.Response:
    """One Prefect REST call; a fresh SQLite server answers 503 now and then (database locked): ask again."""
    deadline = time.monotonic() + attempts_for
    while True:
        try:
            r = httpx.request(method, url, timeout=30, **kw)
            if r.status_code < 500 or time.monotonic() >= deadline:
                return r
        except httpx.TransportError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def deployment_id(api: str, runbook_id: str) -> str | None:
    try:
        r = httpx.get(f"{api}/deployments/name/{runbook_id}/runbook", timeout=5)
    except httpx.HTTPError:
        return None
    return r.json()["id"] if r.status_code == 200 else None


def register_unserved(api: str, runbook_id: str) -> str:
    """The deployment `<id>/runbook` with the runbook flows' parameters, served by nobody: its runs stay Scheduled (open)."""
    flow = rest("POST", f"{api}/flows/", json={"name": runbook_id})
    flow.raise_for_status()
    schema = {"type": "object", "properties": {p: {} for p in RUNBOOK_FLOW_PARAMETERS}}
    r = rest("POST", f"{api}/deployments/", json={"name": "runbook", "flow_id": flow.json()["id"],
                                                  "parameter_openapi_schema": schema, "enforce_parameter_schema": False})
    r.raise_for_status()
    return r.json()["id"]


def flow_runs(api: str, flow_name: str) -> list[dict[str, Any]]:
    """Every flow run of the flow, oldest first."""
    out, offset = [], 0
    while True:
        r = rest("POST", f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": [flow_name]}}, "sort": "ID_DESC",
                                                          "limit": 200, "offset": offset})
        r.raise_for_status()
        page = r.json()
        out.extend(page)
        if len(page) < 200:
            break
        offset += 200
    return sorted(out, key=lambda run: run["created"])


def count_flow_runs(api: str, flow_name: str) -> int:
    r = rest("POST", f"{api}/flow_runs/count", json={"flows": {"name": {"any_": [flow_name]}}})
    r.raise_for_status()
    return r.json()


def flow_run(api: str, run_id: str) -> dict[str, Any]:
    r = rest("GET", f"{api}/flow_runs/{run_id}")
    r.raise_for_status()
    return r.json()


def task_runs(api: str, run_id: str) -> list[dict[str, Any]]:
    r = rest("POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [str(run_id)]}}, "limit": 200})
    r.raise_for_status()
    return r.json()


# ---------------------------------------------------------------- Alertmanager's webhook body


def am_notification(group: str, alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook notification (payload version 4), as Alertmanager sends it."""
    return {"version": "4", "groupKey": group, "truncatedAlerts": 0, "status": status, "receiver": "runbooks",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager.test",
            "alerts": alerts}


def am_alert(labels: dict[str, str], starts: str, *, status: str = "firing", ends: str | None = None,
             annotations: dict[str, str] | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    import hashlib

    fp = fingerprint or hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {"status": status, "labels": labels, "annotations": annotations or {}, "startsAt": starts,
            "endsAt": ends or "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.test/graph", "fingerprint": fp}


class Watcher:
    """`python -m app.stack watcher SECONDS`: the escalation watcher, healing the crashed and silent incidents
    of the runbooks in its RUNBOOK_RUNBOOKS_DIR on the server at `api`."""

    def __init__(self, api: str, home: Path, runbooks_dir: Path = INTAKE_RUNBOOKS, every: float = 1,
                 log: Path | None = None, **env: str):
        self.env = base_env(api, home, RUNBOOK_RUNBOOKS_DIR=str(runbooks_dir), **env)
        self.every = every
        self.log = log or Path(home) / "watcher.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Watcher":
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.stack", "watcher", f"{self.every:g}"], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: "escalation watcher started" in self.log.read_text(errors="replace"), 60, "the watcher to start",
                 every=0.2)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def flow_run_states(api: str, run_id: str) -> list[dict[str, Any]]:
    """A flow run's states, oldest first."""
    r = rest("GET", f"{api}/flow_run_states/", params={"flow_run_id": str(run_id)})
    r.raise_for_status()
    return sorted(r.json(), key=lambda s: s["timestamp"])
