"""The engine's speed budget: ``python -m bench.speed``.

Each figure is measured next to a plain hand-written Prefect flow doing the same work, on the same machine,
in the same run, against one temporary Prefect server (SQLite) that this script starts and stops:

(a) **Per-step overhead**: a runbook of N action steps (each an HTTP POST to a local endpoint) run as a
    compiled runbook, versus a hand-written flow of N tasks making the same POST. Wall time of the whole
    run divided by N; median of the repeats.
(b) **Memory per incident waiting for a person**: resident memory (VmRSS) of the process that holds one
    incident paused at a manual step, versus a hand-written flow paused with `pause_flow_run`. With
    suspended waits (the default from a deployment) the process exits: 0 MB while waiting.

Writes the "Engine speed" section of docs/BENCHMARKS.md (between its markers); `--no-write` only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


class Ok(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def runbook_yaml(steps: int) -> str:
    body = "\n".join(textwrap.dedent(f"""\
      - id: step-{i}
        kind: action
        title: {{zh: 动作{i}, en: Action {i}}}
        http: {{method: POST, url: "{{{{ params.base_url }}}}/act", json: {{n: {i}}}}}""") for i in range(steps))
    return textwrap.dedent("""\
        id: bench-steps
        title: {zh: 基准, en: Benchmark}
        description: {zh: 基准, en: Benchmark}
        source: {plan: 9, title: 基准}
        roles:
          chief-operator: {label: {zh: 主值, en: Chief operator}}
        lead: chief-operator
        parameters:
          base_url: {type: string, label: {zh: 地址, en: Base URL}}
        steps:
        """) + textwrap.indent(body, "  ") + "\n"


WAIT_RUNBOOK = """\
id: bench-wait
title: {zh: 等待, en: Wait}
description: {zh: 基准, en: Benchmark}
source: {plan: 9, title: 基准}
roles:
  chief-operator: {label: {zh: 主值, en: Chief operator}}
lead: chief-operator
steps:
  - id: confirm
    kind: manual
    answerers: [chief-operator]
    title: {zh: 确认, en: Confirm}
"""

# Run in a child process (its own Prefect import, pointed at the bench server). Prints one JSON line.
STEPS_CHILD = """
import json, sys, time
from pathlib import Path
import httpx
from prefect import flow, task
from flows.catalog import make_flow
from integrations.contacts import load_directory
from runbooks.loader import load_file
from runbooks.settings import get_settings

kind, path, base_url, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runbook = load_file(Path(path), load_directory(get_settings().contacts_file))
steps = len(runbook.steps)

@task
def act(n: int):
    return httpx.post(f"{base_url}/act", json={"n": n}, timeout=10).status_code

@flow
def hand_written():
    for n in range(steps):
        act(n)

compiled = make_flow(runbook)
times = []
for _ in range(repeats):
    started = time.perf_counter()
    if kind == "compiled":
        state = compiled(parameters={"base_url": base_url}, return_state=True)
        assert state.is_completed(), state
    else:
        hand_written()
    times.append(time.perf_counter() - started)
print(json.dumps({"steps": steps, "times": times}))
"""

WAIT_CHILD = """
import sys
from prefect import flow
from prefect.flow_runs import pause_flow_run
kind, path = sys.argv[1], sys.argv[2]

@flow
def hand_written():
    pause_flow_run(timeout=3600, key="confirm")

if kind == "compiled":
    from flows.catalog import make_flow
    from integrations.contacts import load_directory
    from runbooks.loader import load_file
    from runbooks.settings import get_settings
    from pathlib import Path
    make_flow(load_file(Path(path), load_directory(get_settings().contacts_file)))()
else:
    hand_written()
"""


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    from tests.conftest import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return proc, api
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the Prefect server did not start")


def child_env(home: Path, api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING", "RUNBOOK_INCIDENTS_DIR": str(home / "incidents"),
            "RUNBOOK_STATE_DIR": str(home / "var"), "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"), "PYTHONPATH": str(ROOT)}


def per_step(home: Path, api: str, base_url: str, steps: int, repeats: int) -> dict[str, float]:
    path = home / "bench-steps.yaml"
    path.write_text(runbook_yaml(steps), encoding="utf-8")
    out = {}
    for kind in ("hand-written", "compiled"):
        done = subprocess.run([sys.executable, "-c", STEPS_CHILD, kind, str(path), base_url, str(repeats)], cwd=ROOT,
                              env=child_env(home, api), capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        out[kind] = statistics.median(result["times"][1:] or result["times"]) / result["steps"]  # first run warms up
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def waiting_memory(home: Path, api: str) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    path = home / "bench-wait.yaml"
    path.write_text(WAIT_RUNBOOK, encoding="utf-8")
    out = {}
    for kind in ("hand-written", "compiled"):
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-c", WAIT_CHILD, kind, str(path)], cwd=ROOT, env=child_env(home, api),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    runs = [r for r in client.read_flow_runs(limit=50) if r.state and r.state.is_paused()
                            and r.created and r.created.timestamp() >= started - 1]
                    if runs:
                        break
                    time.sleep(0.5)
                else:
                    raise RuntimeError(f"the {kind} flow did not pause")
            time.sleep(2)  # let the process settle in its wait loop
            out[kind] = rss_mb(proc.pid)
        finally:
            proc.kill()
            proc.wait()
    return out


def render(results: dict) -> str:
    steps, repeats = results["steps"], results["repeats"]
    a, b = results["per_step"], results["memory"]
    return "\n".join([
        BEGIN,
        "## Engine speed",
        "",
        f"Measured {results['when']} on {results['machine']}; Prefect {results['prefect']}, server on SQLite on the same machine.",
        "",
        f"**(a) Per-step overhead.** A runbook of {steps} action steps (each one HTTP POST to a local endpoint) against a "
        f"hand-written flow of {steps} tasks doing the same POST; median of {repeats - 1} runs after a warm-up, "
        "wall time per step. Both are local runs (no worker), so only the engine differs.",
        "",
        "| | per step |",
        "|---|---|",
        f"| hand-written Prefect flow | {a['hand-written'] * 1000:.0f} ms |",
        f"| compiled runbook | {a['compiled'] * 1000:.0f} ms |",
        f"| runbook overhead | {(a['compiled'] - a['hand-written']) * 1000:+.0f} ms per step |",
        "",
        "The runbook's extra time per step is its journal (a log line and a Prefect event per `step.started` / "
        "`step.done`) and, for actions, the persisted result (a file write) that lets a restarted incident skip the step.",
        "",
        "**(b) Memory per incident waiting for a person** (resident memory of the process holding the wait).",
        "",
        "| | waiting in its process (Paused) | suspended (default from a deployment) |",
        "|---|---|---|",
        f"| hand-written flow, `pause_flow_run` | {b['hand-written']:.0f} MB | — |",
        f"| compiled runbook, manual step | {b['compiled']:.0f} MB | 0 MB: the process exits; the wait is rows in the database |",
        "",
        "Before suspended waits, every incident waiting for a person kept one such process (and, from a worker, a "
        "slot of the worker's `--limit`); after, a waiting incident costs nothing on the workers until it is "
        "answered or the escalation watcher wakes it for a tier or its expiry.",
        "",
        "Alert-to-first-step latency on the embedded stack is in the *Alert intake* section (`python -m bench.alerts`).",
        "",
        "Reproduce: `.venv/bin/python -m bench.speed` (a few minutes; starts and stops its own Prefect server on a free "
        "loopback port; rewrites this section). `--steps`, `--repeats` change the sizes; `--no-write` only prints.",
        END,
    ])


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        updated = head + text + rest.split(END, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(updated, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import prefect

    home = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    server, api = start_server(home)
    try:
        results = {
            "when": time.strftime("%Y-%m-%d %H:%M"), "prefect": prefect.__version__, "steps": args.steps, "repeats": args.repeats,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "per_step": per_step(home, api, f"http://127.0.0.1:{endpoint.server_port}", args.steps, args.repeats),
            "memory": waiting_memory(home, api),
        }
    finally:
        server.terminate()
        server.wait(20)
        endpoint.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    text = render(results)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the engine speed section of {BENCHMARKS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
