"""The embedded stack: a Prefect server on SQLite, every runbook served, the escalation watcher, the alert intake.

`runbook up` runs each part as a child process with the right environment
(Prefect reads its settings when it is imported, so the served flows must start
in a process that already knows the server's address) and stops them all on
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prefect.settings import get_current_settings

from app import prefect_server
from app.warm import WarmRunner
from flows.deploy import served_deployment
from flows.escalation import watch
from flows.server import forget_stack, record_stack
from runbooks.settings import get_settings

RUNNER_POLL_SECONDS = "1"  # the fallback: the runner is told of new runs by the server's events (app/warm.py)
HEARTBEAT_SECONDS = "30"  # Prefect's least; the watcher takes a run silent for 50 s as dead


def own_server_client() -> dict[str, str]:
    """Settings for the clients of a server started here. Without CSRF protection (Prefect's default) they ask it
    for no token: each process's client would otherwise ask at its first write and be told there is none, one
    request more on the way to every run's first step. A server that protects against CSRF
    (PREFECT_SERVER_CSRF_PROTECTION_ENABLED), or a client setting the user gave anywhere, keeps its way."""
    settings = get_current_settings()
    if settings.server.api.csrf_protection_enabled or "csrf_support_enabled" in settings.client.model_fields_set:
        return {}
    return {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}


def serve_runbooks(limit: int | None = None) -> None:
    """Serve every runbook as the deployment `<id>/runbook` until stopped, each run started warm (app/warm.py)."""
    from flows.catalog import FLOWS, RUNBOOKS  # imported here: building every flow is for the serving process only

    runner = WarmRunner(limit=limit or get_settings().serve_limit)  # its forkserver starts importing now, beside the deployments
    for rid, flow in FLOWS.items():
        runner.add_catalog_deployment(served_deployment(flow, RUNBOOKS[rid]))
    asyncio.run(runner.start())


def wait_healthy(api_url: str, seconds: float = 90, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}; see its log above")
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server at {api_url} did not answer within {seconds:.0f} s")


@dataclass
class Stack:
    host: str = "127.0.0.1"
    port: int = 4200
    intake_port: int | None = 8787
    home: Path | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PREFECT_API_URL": self.api_url, "PREFECT_UI_API_URL": self.api_url,
               "PREFECT_UI_URL": self.ui_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_RUNNER_POLL_FREQUENCY": RUNNER_POLL_SECONDS,
               # a run whose process vanished without a Crashed state is found by its silence (flows/recovery.py)
               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT_SECONDS}
        if self.home:
            env["PREFECT_HOME"] = str(self.home)
        return env

    def start(self, *, server: bool = True) -> None:
        env = self.env()
        if server:
            env.update(own_server_client())
            server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}  # app.prefect_server adds SERVER_SETTINGS
            proc = subprocess.Popen(prefect_server.command(self.host, self.port),
                                    env=server_env, start_new_session=True)
            self.procs.append(proc)
            wait_healthy(self.api_url, proc=proc)
            record_stack(self.api_url, self.ui_url)  # other commands find this server without PREFECT_API_URL
        self.procs.append(subprocess.Popen([sys.executable, "-m", "app.stack", "serve"], env=env, start_new_session=True))
        # waits suspend (their processes exit); the watcher pages their tiers and expires them
        self.procs.append(subprocess.Popen([sys.executable, "-m", "app.stack", "watcher"], env=env, start_new_session=True))
        if self.intake_port:
            self.procs.append(subprocess.Popen([sys.executable, "-m", "app.stack", "intake", self.host, str(self.intake_port)],
                                               env=env, start_new_session=True))

    def wait(self) -> int:
        """Block until a part exits, Ctrl-C or SIGTERM; then stop everything."""

        def terminate(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
        try:
            while all(p.poll() is None for p in self.procs):
                time.sleep(0.5)
            return next(p.returncode for p in self.procs if p.poll() is not None) or 1
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the parts one by one, last started first: the served flows still need the server to pause their deployments."""
        forget_stack()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        serve_runbooks()
    elif argv[:1] == ["watcher"]:
        import logging

        # force: importing Prefect gave the root logger its own handler at WARNING, which would hide every pass
        logging.basicConfig(level=logging.INFO, format="%(asctime)s watcher %(message)s", force=True)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        watch(float(argv[1]) if len(argv) > 1 else 5.0)
    elif argv[:1] == ["intake"]:
        from app.server import run_intake  # the web app and its webhooks: for the intake's process only

        run_intake(argv[1], int(argv[2]))
    else:
        raise SystemExit("usage: python -m app.stack serve | watcher [SECONDS] | intake HOST PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
