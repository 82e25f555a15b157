"""The engine's speed budget: ``python -m bench.speed``.

Each figure is measured next to a plain hand-written Prefect flow doing the same work, on the same machine,
in the same run, against one temporary Prefect server (SQLite) that this script starts and stops:

(a) **Per-step overhead**: a runbook of N action steps (each an HTTP POST to a local endpoint) run as a
    compiled runbook, versus a hand-written flow of N tasks making the same POST. Per step is the time from one
    step's POST arriving at the endpoint to the next one's, over the run (first to last POST, divided by N-1);
    median of the repeats. What a run costs once (its start, and its end, where Prefect 3.9 joins its heartbeat
    thread, which sleeps in 1 s steps, so a whole run's wall time comes in whole seconds) is left out of it on both
    sides: the alert-to-first-action figures measure a start, and the runbook's end is a figure of its own, from
    its last step's POST until its final flush returns (its steps' records, written beside the steps, are then on
    the server; about one request on a busy server, the same after 10, 30 or 60 steps).
(b) **Memory per incident waiting for a person**: resident memory (VmRSS) of the process that holds one
    incident paused at a manual step, versus a hand-written flow paused with `pause_flow_run`. With
    suspended waits (the default from a deployment) the process exits: 0 MB while waiting.
(c) **Incidents at once, served**: the runbook of bench/served (three action steps, each an HTTP POST to a local
    endpoint, then a 2 s `wait`; no people) served by ``python -m app.stack serve``, next to ``plain_incident``
    below (the same work as a hand-written flow) served by ``prefect.serve``; both with
    PREFECT_RUNNER_POLL_FREQUENCY=1 and no runner ``limit``. K runs created at once with
    ``run_deployment(timeout=0)``; wall time until all K are finished, and incidents per minute.
(d) **Run created to first step Running, served**: one run at a time (after a warm-up), from the flow run's
    ``created`` to the start time of its first step's task run, both as the Prefect server records them.

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

from app import prefect_server
from bench import sections
from prefect import flow, task

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
SERVED_RUNBOOKS = ROOT / "bench" / "served"   # bench-incident.yaml: concurrency_limit 50
SERVED_RUNBOOK = "bench-incident"
PLAIN_DEPLOYMENT = "plain-incident/plain"
BATCHES = (1, 5, 10, 20)
RUN_TIMEOUT = 600.0   # one batch (or one latency sample) to finish; every loop below is bounded by it


@task(task_run_name="act-{n}")
def plain_act(base_url: str, n: int) -> int:
    return httpx.post(f"{base_url}/act", json={"n": n}, timeout=10).status_code


@flow(name="plain-incident")
def plain_incident(base_url: str) -> None:
    """What bench/served/bench-incident.yaml does, written by hand: three POSTs, then a 2 s wait."""
    for n in range(3):
        plain_act(base_url, n)
    time.sleep(2)


SERVE_PLAIN = """
from prefect import serve
from prefect.deployments.runner import EntrypointType
from bench.speed import plain_incident
serve(plain_incident.to_deployment(name="plain", entrypoint_type=EntrypointType.MODULE_PATH), limit=None,
      print_starting_message=False)
"""


class Ok(BaseHTTPRequestHandler):
    arrivals: dict[str, list[float]] = {}   # path -> when its POSTs arrived (time.time()); per_step reads it

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.arrivals.setdefault(self.path, []).append(time.time())
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
import requests
from prefect import flow, task
from flows.catalog import make_flow
from integrations.contacts import load_directory
from runbooks.loader import load_file
from runbooks.settings import get_settings

path, base_url, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
runbook = load_file(Path(path), load_directory(get_settings().contacts_file))
steps = len(runbook.steps)

@task
def act(url: str, n: int):  # the same call as an action step makes (tasks/action.py): only the engines differ
    return requests.request("POST", f"{url}/act", json={"n": n}, timeout=10).status_code

@flow
def hand_written(url: str):
    for n in range(steps):
        act(url, n)

compiled = make_flow(runbook)
# A compiled run hands its steps' records to a writer thread and waits for it only at its end (WRITER.flush): when
# that wait ends, its steps' records are on the server; the parent reports the time from the last POST to it.
import tasks.records as records
flushed, _flush, running = {}, records.WRITER.flush, [None]
def flush(*args, **kwargs):
    done = _flush(*args, **kwargs)
    flushed.setdefault(running[0], time.time())
    return done
records.WRITER.flush = flush
for repeat in range(repeats):  # the two in turn, so what else the machine does falls on both alike
    hand_written(f"{base_url}/hand-written/{repeat}")   # each run's POSTs under a path of their own
    running[0] = repeat
    state = compiled(parameters={"base_url": f"{base_url}/compiled/{repeat}"}, return_state=True)
    assert state.is_completed(), state
print(json.dumps({"steps": steps, "flushed": flushed}))
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


def start_server(home: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """A Prefect server of its own, set as `runbook up` sets it, plus `settings` (e.g. a PostgreSQL database URL)."""
    from tests.conftest import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
           **settings}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(prefect_server.command("127.0.0.1", port),
                            env=env, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
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


def per_step(home: Path, api: str, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per step, hand-written and compiled: from one step's POST to the next (what one more step costs), median
    over the runs after the first (it warms up); and `records_tail`, what a compiled run adds once, at its end: from
    its last step's POST until its final flush returns (its steps' done records are then on the server). The
    endpoint is this function's own, so it knows each POST's arrival."""
    path = home / "bench-steps.yaml"
    path.write_text(runbook_yaml(steps), encoding="utf-8")
    Ok.arrivals.clear()
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{endpoint.server_port}"
    out = {}
    try:
        done = subprocess.run([sys.executable, "-c", STEPS_CHILD, str(path), base_url, str(repeats)], cwd=ROOT,
                              env=child_env(home, api), capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        flushed = json.loads(done.stdout.strip().splitlines()[-1])["flushed"]
        tails = []
        for kind in ("hand-written", "compiled"):
            cadence = []
            for repeat in range(1, repeats) if repeats > 1 else range(1):
                arrived = Ok.arrivals.get(f"/{kind}/{repeat}/act", [])
                if len(arrived) != steps:
                    raise RuntimeError(f"{kind} run {repeat}: {len(arrived)} of {steps} steps' POSTs arrived")
                cadence.append((arrived[-1] - arrived[0]) / max(steps - 1, 1))
                if kind == "compiled":
                    if str(repeat) not in flushed:
                        raise RuntimeError(f"compiled run {repeat}: its records' flush was not seen")
                    tails.append(max(0.0, flushed[str(repeat)] - arrived[-1]))
            out[kind] = statistics.median(cadence)
        out["records_tail"] = statistics.median(tails)
    finally:
        endpoint.shutdown()
        endpoint.server_close()
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


# ---------------------------------------------------------------- (c), (d): served


def served_env(home: Path, api: str) -> dict[str, str]:
    env = child_env(home, api)
    env.update({"PREFECT_RUNNER_POLL_FREQUENCY": "1", "RUNBOOK_RUNBOOKS_DIR": str(SERVED_RUNBOOKS)})
    return env


def start_served(home: Path, api: str) -> list[subprocess.Popen]:
    """`python -m app.stack serve` over bench/served, and `prefect.serve` of plain_incident; each until stopped."""
    from tests.alerts.procs import wait_for

    procs = []
    for name, cmd in (("serve-runbook", ["-m", "app.stack", "serve"]), ("serve-plain", ["-c", SERVE_PLAIN])):
        procs.append(subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=served_env(home, api),
                                      stdout=open(home / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))

    def ready():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a served process exited ({proc.returncode}); see {home}")
        return all(httpx.get(f"{api}/deployments/name/{name}", timeout=5).status_code == 200
                   for name in (f"{SERVED_RUNBOOK}/runbook", PLAIN_DEPLOYMENT))

    wait_for(ready, 120, "the served deployments", every=0.5)
    return procs


def stop_served(procs: list[subprocess.Popen]) -> None:
    from tests.alerts.procs import stop_process

    for proc in procs:
        stop_process(proc, timeout=30)


def create_run(kind: str, base_url: str):
    from prefect.deployments import run_deployment

    if kind == "runbook":
        return run_deployment(f"{SERVED_RUNBOOK}/runbook", parameters={"parameters": {"base_url": base_url}}, timeout=0)
    return run_deployment(PLAIN_DEPLOYMENT, parameters={"base_url": base_url}, timeout=0)


def finished_runs(api: str, ids: list[str]) -> list[dict]:
    from tests.alerts.procs import rest

    r = rest("POST", f"{api}/flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}}, "limit": 200})
    r.raise_for_status()
    runs = r.json()
    final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    if len(runs) == len(ids) and all(run["state"] and run["state"]["type"] in final for run in runs):
        bad = [run for run in runs if run["state"]["type"] != "COMPLETED"]
        if bad:
            raise RuntimeError(f"{len(bad)} run(s) did not complete: {bad[0]['state']}")
        return runs
    return []


def parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def at_once(api: str, base_url: str, kind: str, k: int) -> dict[str, float]:
    from tests.alerts.procs import wait_for

    began = time.time()
    ids = [str(create_run(kind, base_url).id) for _ in range(k)]
    created = time.time() - began
    runs = wait_for(lambda: finished_runs(api, ids), RUN_TIMEOUT, f"{k} {kind} runs to finish", every=0.25)
    wall = max(parse_time(run["end_time"]) for run in runs) - began
    return {"k": k, "wall": wall, "per_minute": k / wall * 60, "created": created}


def first_step(api: str, base_url: str, kind: str) -> float:
    from tests.alerts.procs import task_runs, wait_for

    run = create_run(kind, base_url)

    def started():
        found = [t for t in task_runs(api, str(run.id)) if t["name"] == "act-0" and t.get("start_time")]
        return found[0] if found else None

    step = wait_for(started, RUN_TIMEOUT, f"the {kind} run's first step", every=0.1)
    done = wait_for(lambda: finished_runs(api, [str(run.id)]), RUN_TIMEOUT, f"the {kind} run to finish", every=0.25)
    return parse_time(step["start_time"]) - parse_time(done[0]["created"])


def served(home: Path, api: str, base_url: str, samples: int) -> dict:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    out: dict = {"at_once": {}, "first_step": {}}
    procs = start_served(home, api)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            for kind in ("plain", "runbook"):
                first_step(api, base_url, kind)  # warm-up
                out["first_step"][kind] = []
                for n in range(samples):
                    out["first_step"][kind].append(first_step(api, base_url, kind))
                    print(f"  (d) {kind} sample {n + 1}/{samples}: {out['first_step'][kind][-1]:.2f} s", flush=True)
                out["at_once"][kind] = []
                for k in BATCHES:
                    out["at_once"][kind].append(at_once(api, base_url, kind, k))
                    print(f"  (c) {kind} K={k}: {out['at_once'][kind][-1]['wall']:.1f} s", flush=True)
    finally:
        stop_served(procs)
    return out


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[int(max(1, -(-len(ordered) * p // 100))) - 1]


def render_served(s: dict, samples: int) -> list[str]:
    c, d = s["at_once"], s["first_step"]
    rows = [f"| {b['k']} | {b['wall']:.1f} s | {b['per_minute']:.0f} | {r['wall']:.1f} s | {r['per_minute']:.0f} |"
            for b, r in zip(c["plain"], c["runbook"])]
    return [
        f"**(c) Incidents handled at once, served** on this {os.cpu_count()}-CPU machine. The runbook of `bench/served` "
        "(three action steps, each an HTTP POST to a local endpoint, then a 2 s `wait`; no people) served by "
        "`python -m app.stack serve`, next to `bench.speed.plain_incident` (the same work as a hand-written flow) "
        "served by `prefect.serve`; both with `PREFECT_RUNNER_POLL_FREQUENCY=1`. K runs created at once with "
        "`run_deployment(timeout=0)`; wall time from before the first is created until the last one ends.",
        "",
        "| K at once | hand-written flow: all done | per minute | runbook: all done | per minute |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Neither limit decides these figures: the served runner has no `limit` (`serve_runbooks()` passes `limit=None`, "
        "so every scheduled run gets its process at once) and the bench runbook sets `concurrency_limit: 50` (the "
        "default of 5 from `Runbook.concurrency_limit` would queue the 10- and 20-incident batches in fives; the hand-"
        "written deployment has no concurrency limit). What does decide them is how a run gets its process: "
        "`prefect.serve` polls every second and starts each flow run as a new Python interpreter that imports "
        "Prefect, so K incidents are K interpreters starting on two cores at once; `app.stack serve` is told of a "
        "new run by the server's events and forks it from a parent that has imported everything already "
        "(app/warm.py). One pass per K, hand-written first, then the runbook; not repeated.",
        "",
        f"**(d) Run created to first step Running, served** ({samples} runs one at a time, after a warm-up): from the "
        "flow run's `created` to the start time of its first step's task run, both as the Prefect server records "
        f"them{' (with ' + str(samples) + ' samples, p95 is the largest)' if samples < 20 else ''}. The *Alert intake* section measures the same from an alert's arrival at the receiver.",
        "",
        "| | median | p95 | max |",
        "|---|---|---|---|",
        *[f"| {name} | {statistics.median(d[kind]):.2f} s | {percentile(d[kind], 95):.2f} s | {max(d[kind]):.2f} s |"
          for name, kind in (("hand-written flow", "plain"), ("runbook", "runbook"))],
        "",
    ]


def render_local(results: dict) -> list[str]:
    steps, repeats = results["steps"], results["repeats"]
    a, b = results["per_step"], results["memory"]
    return [
        f"**(a) Per-step overhead.** A runbook of {steps} action steps (each one HTTP POST to a local endpoint) against a "
        f"hand-written flow of {steps} tasks doing the same POST; median of {repeats - 1} runs after a warm-up, "
        "time from one step's POST to the next. Both are local runs (no worker), so only the engine differs.",
        "",
        "| | per step |",
        "|---|---|",
        f"| hand-written Prefect flow | {a['hand-written'] * 1000:.0f} ms |",
        f"| compiled runbook | {a['compiled'] * 1000:.0f} ms |",
        f"| runbook overhead | {(a['compiled'] - a['hand-written']) * 1000:+.0f} ms per step |",
        "",
        f"Once per run, at its end, the runbook waits {a['records_tail'] * 1000:.0f} ms (median) from its last step's POST until "
        "its final flush returns (its steps' done records are then on the server).",
        "",
        "The runbook's extra time per step is its journal (a log line per `step.started` / `step.done`, and a Prefect "
        "event for them, one for both when the step is quick), the step's own task object (built per incident: it carries the incident's cache key), and, for "
        "actions, the done record and began mark that let a restarted incident skip the step, written to the Prefect "
        "server by the process's record writer beside the steps (the server shares the machine's two CPUs).",
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
    ]


def kept_local(path: Path = BENCHMARKS) -> tuple[str, list[str]]:
    """`--served-only`: the (a)/(b) text and its 'Measured ...' line as they are in the section now."""
    section = path.read_text(encoding="utf-8").split(BEGIN, 1)[1].split(END, 1)[0]
    lines = section.strip("\n").splitlines()
    measured = next(line for line in lines if line.startswith("Measured ") or line.startswith("(a), (b) measured "))
    first = next(i for i, line in enumerate(lines) if line.startswith("**(a)"))
    last = next(i for i, line in enumerate(lines) if line.startswith(("**(c)", "Alert-to-first-step")))
    return measured, lines[first:last]


def render(results: dict) -> str:
    measured = (f"Measured {results['when']} on {results['machine']}; Prefect {results['prefect']}, "
                "server on SQLite on the same machine.")
    if "kept" in results:  # --served-only: (a) and (b) are from an earlier run
        earlier, local = results["kept"]
        earlier = earlier.removeprefix("(a), (b) measured ").removeprefix("Measured ").split(";")[0].split(" on ")[0]
        measured = (f"(a), (b) measured {earlier}; (c), (d) measured {results['when']}; on {results['machine']}; "
                    f"Prefect {results['prefect']}, server on SQLite on the same machine.")
    else:
        local = render_local(results)
    return "\n".join([
        BEGIN,
        "## Engine speed",
        "",
        measured,
        "",
        *local,
        *render_served(results["served"], results["samples"]),
        "Alert-to-first-step latency on the embedded stack is in the *Alert intake* section (`python -m bench.alerts`).",
        "",
        "Reproduce: `.venv/bin/python -m bench.speed` (about ten minutes; starts and stops its own Prefect server and "
        "served processes on free loopback ports; rewrites this section). `--steps`, `--repeats`, `--samples` change "
        "the sizes; `--served-only` measures (c) and (d) and keeps (a) and (b) as they are; `--no-write` only prints.",
        END,
    ])


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    sections.write_section(text, BEGIN, END, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--samples", type=int, default=10, help="(d) runs per kind (default 10)")
    parser.add_argument("--served-only", action="store_true", help="measure (c) and (d); keep (a) and (b) from the section")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import prefect

    home = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    server, api = start_server(home)
    try:
        base_url = f"http://127.0.0.1:{endpoint.server_port}"
        results = {
            "when": time.strftime("%Y-%m-%d %H:%M"), "prefect": prefect.__version__, "steps": args.steps, "repeats": args.repeats,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "samples": args.samples,
        }
        if args.served_only:
            results["kept"] = kept_local()
        else:
            results["per_step"] = per_step(home, api, args.steps, args.repeats)
            results["memory"] = waiting_memory(home, api)
        results["served"] = served(home, api, base_url, args.samples)
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
