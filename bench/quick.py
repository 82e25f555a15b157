"""The warm-start figures in one run: ``python -m bench quick [--json]`` (about 4 minutes on two cores).

One temporary Prefect server (SQLite), and on it, as `runbook up` has them:
- the served runbooks (``python -m app.stack serve``: warm forked runs, told by the server's events),
  the alert intake (``python -m app.stack intake``), a local endpoint standing in for the systems an
  action calls and for the pager (a webhook channel);
- bare Prefect next to it: a hand-written flow served by ``prefect.serve`` (runner poll 1 s), whose first
  task makes the same POST.

The runbook (``quick-bench``): an HTTP action, a page, a manual step (its wait suspends the run), a page.

Figures (the JSON keys):
- ``alert_to_first_action_p50_s`` / ``_p95_s``: Alertmanager-format alert POSTed to the intake -> the
  endpoint receives the runbook's first action; ``bare_prefect_first_task_p50_s`` / ``_p95_s``:
  ``run_deployment`` -> the bare flow's first task's POST arrives. One at a time, after a warm-up.
- ``first_page_p50_s`` / ``first_page_p95_s``: the same alert -> its first page delivered to the webhook.
- ``answer_to_next_page_p50_s``: the suspended manual step answered through the API the UI and the
  CLI use -> the next page delivered (the run resumes in a new forked process).
- ``step_overhead_ratio``: per step, a compiled runbook of HTTP actions over a hand-written flow of
  tasks making the same POSTs with the same library (bench/speed.py's measure: local runs of the two in
  turn, 30 steps each, from one step's POST to the next: what one more step costs).
  ``step_records_tail_s``: what a runbook run adds once, at its end: from its last step's POST until its
  final flush returns (its steps' done records are then on the server; about one request on a busy server).
- ``burst_200_to_first_wait_s``: 200 alerts of 200 groups POSTed at once -> all 200 incidents wait at
  their manual step (Suspended); ``burst_peak_memory_mb``: the stack's peak memory meanwhile (PSS of
  the server, the served runner with its forkserver and runs, and the intake).
- ``drain_alerts_per_s``, ``storm_incidents``, ``storm_groups``: the intake's drain (bench/alerts.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx

from prefect import flow, task

from bench.sections import figure_rows, show

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = "quick-bench"
SAMPLES = 10
BURST = 200
BURST_SECONDS = 90  # how long the burst is watched: past the 60 s target, what the count then says is enough; keeps the run under 5 minutes

QUICK_RUNBOOK = """\
id: quick-bench
title: {zh: 快速基准, en: Quick benchmark}
description: {zh: 基准用预案, en: Benchmark runbook}
source: {plan: 9, title: 基准}
concurrency_limit: 250
parameters:
  base_url: {type: string, label: {zh: 地址, en: Base URL}}
  n: {type: string, label: {zh: 编号, en: Number}, default: "0"}
roles:
  chief-operator: {label: {zh: 主值, en: Chief operator}}
  deputy-operator: {label: {zh: 副值, en: Deputy operator}}
lead: chief-operator
steps:
  - id: first-action
    kind: action
    title: {zh: 第一个动作, en: First action}
    http: {method: POST, url: "{{ params.base_url }}/first/{{ params.n }}", json: {}}
  - id: first-page
    kind: notify
    title: {zh: 通知主值, en: Page the chief}
    to: [chief-operator]
    message: {zh: "基准 {{ params.n }}", en: "bench {{ params.n }}"}
  - id: confirm
    kind: manual
    title: {zh: 确认, en: Confirm}
    answerers: [chief-operator]
  - id: next-page
    kind: notify
    title: {zh: 通知副值, en: Page the deputy}
    to: [deputy-operator]
    message: {zh: "基准 {{ params.n }} 已确认", en: "bench {{ params.n }} confirmed"}
"""



@task
def bare_first(base_url: str, n: str) -> int:
    return httpx.post(f"{base_url}/bare/{n}", json={}, timeout=10).status_code


@flow(name="bare-incident")
def bare_incident(base_url: str, n: str) -> None:
    """Bare Prefect: the runbook's first action, written by hand."""
    bare_first(base_url, n)


def serve_bare(module: str, flow: str) -> str:
    """The script (`python -c`) that serves a hand-written flow as bare Prefect does: `prefect.serve`, no limit."""
    return (f"from prefect import serve\nfrom prefect.deployments.runner import EntrypointType\nfrom {module} import {flow}\n"
            f"serve({flow}.to_deployment(name='bare', entrypoint_type=EntrypointType.MODULE_PATH), limit=None,"
            " print_starting_message=False)\n")


SERVE_BARE = serve_bare("bench.quick", "bare_incident")


class Arrivals:
    """What the local endpoint received: path -> the times it arrived (time.time())."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def add(self, path: str) -> None:
        with self.changed:
            self.seen.setdefault(path, []).append(time.time())
            self.changed.notify_all()

    def wait(self, path: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.seen.get(path):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"nothing arrived at {path} within {timeout:.0f} s")
                self.changed.wait(left)
            return self.seen[path][0]

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(len(v) for k, v in self.seen.items() if k.startswith(prefix))


def endpoint(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = self.path
            if path.startswith("/page/"):  # the webhook channel: the page's text names the incident
                text = json.loads(body or b"{}").get("text", "")
                path = f"{path}/{text.split()[-1] if path.endswith('first') else text.split()[-2]}"
            arrivals.add(path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_config(home: Path, base_url: str) -> dict[str, str]:
    runbooks = home / "runbooks"
    runbooks.mkdir()
    (runbooks / f"{RUNBOOK}.yaml").write_text(QUICK_RUNBOOK, encoding="utf-8")
    (home / "contacts.yaml").write_text(textwrap.dedent(f"""\
        people:
          - id: chief
            name: Chief
            roles: [chief-operator]
            channels: [{{channel: webhook, to: "{base_url}/page/first"}}]
          - id: deputy
            name: Deputy
            roles: [deputy-operator]
            channels: [{{channel: webhook, to: "{base_url}/page/next"}}]
        """), encoding="utf-8")
    (home / "routes.yaml").write_text("routes: []\n", encoding="utf-8")
    return {"RUNBOOK_RUNBOOKS_DIR": str(runbooks), "RUNBOOK_CONTACTS_FILE": str(home / "contacts.yaml"),
            "RUNBOOK_ROUTES_FILE": str(home / "routes.yaml")}


def alert(base_url: str, n: str) -> dict:
    labels = {"alertname": "QuickBench", "runbook": RUNBOOK, "base_url": base_url, "n": n}
    return {"version": "4", "status": "firing", "receiver": "bench", "groupKey": f"quick-{n}", "groupLabels": labels,
            "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://bench",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": f"bench {n}"},
                        "startsAt": "2026-11-30T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"q{n}"}]}


def pss_mb(pids: list[int]) -> float:
    """Proportional memory of these processes (shared pages counted once overall)."""
    total = 0.0
    for pid in set(pids):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def tree_pss(roots: dict[str, int]) -> dict[str, float]:
    """PSS in MB of each root's process tree, from one walk of /proc."""
    tree = process_tree(list(roots.values()))
    return {name: pss_mb(tree[pid]) for name, pid in roots.items()}


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children it has waited for (a forkserver's ended runs), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_tree(roots: list[int]) -> dict[int, list[int]]:
    """Each root with itself and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree = {}
    for root in roots:
        seen, todo = [], [root]
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo += children.get(pid, [])
        tree[root] = seen
    return tree


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def paused_runs(api: str) -> list[dict]:
    from tests.alerts.procs import rest

    found, offset = [], 0
    while True:
        r = rest("POST", f"{api}/flow_runs/filter", json={
            "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}, "tags": {"all_": [f"runbook:{RUNBOOK}"]}},
            "limit": 200, "offset": offset})
        r.raise_for_status()
        page = r.json()
        found += page
        if len(page) < 200:
            return found
        offset += 200


def paused_count(api: str, flow: str | None = None) -> int:
    """How many runs wait (Paused or Suspended): the runbook's incidents, or the runs of the flow `flow` (bare
    Prefect's, bench/burst.py). A count, so the watching costs the server the same small query whether 1 or 200 wait."""
    from tests.alerts.procs import rest

    waiting = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
    if flow is None:
        waiting["flow_runs"]["tags"] = {"all_": [f"runbook:{RUNBOOK}"]}
    else:
        waiting["flows"] = {"name": {"any_": [flow]}}
    r = rest("POST", f"{api}/flow_runs/count", json=waiting)
    r.raise_for_status()
    return int(r.json())


class Stack:
    def __init__(self, home: Path, api: str, env: dict[str, str]):
        self.home, self.api, self.env = home, api, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        self.procs[name] = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env,
                                            stdout=open(self.home / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process at once, each given `grace` seconds: after a burst the served runner would take its
        time winding down 200 runs, and what it does then is measured by nobody (the bench's 5 minutes include it)."""
        from tests.alerts.procs import stop_process

        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            stop_process(proc, timeout=grace)


@dataclass
class Served:
    """The served stack of a bench, up and ready: its Prefect server, `app.stack serve` and `app.stack intake`."""
    home: Path
    api: str
    intake: str
    base_url: str           # the local endpoint: the runbook's actions and the pager's webhook
    arrivals: Arrivals
    stack: Stack
    server_pid: int


@contextmanager
def served_stack(home: Path, log=print, *, with_bare: bool = False) -> Iterator[Served]:
    """Start the stack as `runbook up` has it (and, `with_bare`, bare Prefect's served flow beside it); stop it after."""
    from app.stack import own_server_client
    from bench.speed import child_env, start_server
    from tests.alerts.procs import free_port, stop_process, wait_for

    arrivals = Arrivals()
    server = endpoint(arrivals)
    base_url = f"http://127.0.0.1:{server.server_port}"
    prefect_proc, api = start_server(home)
    intake_port = free_port()
    env = {**child_env(home, api), **own_server_client(), **write_config(home, base_url), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "RUNBOOK_WEBHOOK_TIMEOUT": "10"}
    # this process answers steps too (as the CLI does): the same contacts and runbooks as the stack
    os.environ.update({k: v for k, v in env.items() if k.startswith("RUNBOOK_")})
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(home)})
    from prefect.context import refresh_global_settings_context

    from runbooks.settings import get_settings

    get_settings.cache_clear()
    refresh_global_settings_context()
    stack = Stack(home, api, env)
    deployments = [f"{RUNBOOK}/runbook"] + (["bare-incident/bare"] if with_bare else [])
    try:
        stack.start("serve", ["-m", "app.stack", "serve"])
        stack.start("intake", ["-m", "app.stack", "intake", "127.0.0.1", str(intake_port)])
        if with_bare:
            stack.start("bare", ["-c", SERVE_BARE])
        intake = f"http://127.0.0.1:{intake_port}"

        def ready() -> bool:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {home / (name + '.log')}")
            try:
                return (httpx.get(f"{intake}/healthz", timeout=2).status_code == 200
                        and all(httpx.get(f"{api}/deployments/name/{d}", timeout=5).status_code == 200 for d in deployments))
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "the served stack", every=0.5)
        log("stack ready")
        yield Served(home, api, intake, base_url, arrivals, stack, prefect_proc.pid)
    finally:
        stack.stop()
        stop_process(prefect_proc, timeout=20)
        server.shutdown()


def measure(home: Path, log=print) -> dict:
    from bench.speed import per_step

    results: dict = {}
    with served_stack(home, log, with_bare=True) as s:
        results.update(latencies(s.api, s.intake, s.base_url, s.arrivals, log))
        results.update(bare(s.api, s.base_url, s.arrivals, log))
        # per step before the burst: the burst leaves SQLite busy (503) for minutes after
        steps = per_step(home, s.api, steps=30, repeats=6)
        results["step_overhead_ratio"] = round(steps["compiled"] / steps["hand-written"], 2)
        results["step_seconds_runbook"], results["step_seconds_hand_written"] = round(steps["compiled"], 4), round(steps["hand-written"], 4)
        results["step_records_tail_s"] = round(steps["records_tail"], 3)
        log(f"per step: {steps}")
        # on the same server (a second one would cost its start); its 120 runs stay Scheduled, served by nobody
        results.update(drain(log, s.api, s.home))
        results.update(burst(s.api, s.intake, s.base_url, s.arrivals,
                             {"server": s.server_pid, "serve": s.stack.procs["serve"].pid, "intake": s.stack.procs["intake"].pid}, log))
    return results


def latencies(api: str, intake: str, base_url: str, arrivals: Arrivals, log) -> dict:
    from flows.answers import answer_step
    from tests.alerts.procs import wait_for

    first, page, answered = [], [], []
    for i in range(SAMPLES + 1):  # the first is a warm-up
        n = f"s{i}"
        began = time.time()
        httpx.post(f"{intake}/alerts/alertmanager", json=alert(base_url, n), timeout=10).raise_for_status()
        acted = arrivals.wait(f"/first/{n}") - began
        paged = arrivals.wait(f"/page/first/{n}") - began
        run = wait_for(lambda: next((r for r in paused_runs(api) if r["parameters"]["parameters"].get("n") == n), None),
                       60, f"incident {n} to wait", every=0.1)
        asked = time.time()
        result = answer_step(run["id"], by="chief", values={})
        assert result.ok, result.message
        next_page = arrivals.wait(f"/page/next/{n}") - asked
        # each sample on a quiet stack: the incident before it has closed (its report and archive written)
        wait_for(lambda: _state(api, run["id"]) in ("COMPLETED", "FAILED", "CRASHED"), 60, f"incident {n} to close", every=0.2)
        time.sleep(1)
        if i:
            first.append(acted), page.append(paged), answered.append(next_page)
        log(f"sample {n}: first action {acted:.2f} s, first page {paged:.2f} s, answer -> next page {next_page:.2f} s")
    return {"alert_to_first_action_p50_s": round(statistics.median(first), 3),
            "alert_to_first_action_p95_s": round(percentile(first, 95), 3),
            "first_page_p50_s": round(statistics.median(page), 3), "first_page_p95_s": round(percentile(page, 95), 3),
            "answer_to_next_page_p50_s": round(statistics.median(answered), 3),
            "answer_to_next_page_p95_s": round(percentile(answered, 95), 3)}


def _state(api: str, run_id: str) -> str | None:
    from tests.alerts.procs import rest

    state = rest("GET", f"{api}/flow_runs/{run_id}").json().get("state") or {}
    return state.get("type")


def bare(api: str, base_url: str, arrivals: Arrivals, log) -> dict:
    from prefect.deployments import run_deployment
    from tests.alerts.procs import wait_for

    samples = []
    for i in range(SAMPLES + 1):
        n = f"b{i}"
        began = time.time()
        run = run_deployment("bare-incident/bare", parameters={"base_url": base_url, "n": n}, timeout=0)
        took = arrivals.wait(f"/bare/{n}") - began
        wait_for(lambda: _state(api, str(run.id)) in ("COMPLETED", "FAILED", "CRASHED"), 60, f"bare run {n} to end", every=0.2)
        time.sleep(1)
        if i:
            samples.append(took)
        log(f"bare sample {n}: first task {took:.2f} s")
    return {"bare_prefect_first_task_p50_s": round(statistics.median(samples), 3),
            "bare_prefect_first_task_p95_s": round(percentile(samples, 95), 3)}


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each root's process tree (a run that ended counts in its parent's children's time)."""
    tree = process_tree(list(roots.values()))
    return {name: sum(cpu_seconds(pid) for pid in tree[pid]) for name, pid in roots.items()}


def watch(start, waiting, size: int, roots: dict[str, int], log, seconds: float) -> dict:
    """Start a burst (`start()`), then count `waiting()` every half second until all `size` wait or `seconds` have
    passed; the process trees' CPU seconds meanwhile and their peak memory (PSS, sampled every half second)."""
    samples = [tree_pss(roots)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(tree_pss(roots))

    threading.Thread(target=sample, daemon=True).start()
    cpu_before = tree_cpu(roots)
    began = time.time()
    count = 0
    try:
        start()
        while time.time() - began < seconds:
            try:
                count = waiting()
            except (httpx.HTTPError, ValueError) as exc:  # the server too busy to answer this count: count again
                log(f"burst: could not count the waiting incidents ({type(exc).__name__}); counting again")
                time.sleep(0.5)
                continue
            if count >= size:
                break
            time.sleep(0.5)
    finally:
        done.set()
    took = time.time() - began
    cpu = {name: round(after - cpu_before[name], 1) for name, after in tree_cpu(roots).items()}
    peak = max(samples, key=lambda s: sum(s.values()))
    log(f"burst: {count} of {size} waiting after {took:.1f} s; peak memory {sum(peak.values()):.0f} MB "
        f"({', '.join(f'{k} {v:.0f}' for k, v in peak.items())}); CPU s meanwhile: {cpu}")
    return {"seconds": round(took, 1) if count >= size else None, "waiting": count, "cpu_seconds": cpu,
            "peak_memory_mb": round(sum(peak.values())), "peak_memory_by_process_mb": {k: round(v) for k, v in peak.items()}}


def post_burst(intake: str, base_url: str, size: int) -> None:
    """`size` alerts of as many groups (`burst0`, `burst1`...) POSTed to the intake one after another."""
    with httpx.Client(timeout=30) as client:
        for i in range(size):
            client.post(f"{intake}/alerts/alertmanager", json=alert(base_url, f"burst{i}")).raise_for_status()


def burst(api: str, intake: str, base_url: str, arrivals: Arrivals, roots: dict[str, int], log) -> dict:
    already = paused_count(api)
    found = watch(lambda: post_burst(intake, base_url, BURST), lambda: paused_count(api) - already, BURST, roots,
                  log, BURST_SECONDS)
    return {"burst_200_to_first_wait_s": found["seconds"], "burst_waiting": found["waiting"],
            "burst_peak_memory_mb": found["peak_memory_mb"], "burst_first_actions": arrivals.count("/first/burst"),
            "burst_peak_memory_by_process_mb": found["peak_memory_by_process_mb"], "burst_cpu_seconds": found["cpu_seconds"]}


def drain(log, api: str, home: Path) -> dict:
    try:
        from bench.alerts import measure_drain
    except ImportError:
        return {"drain_alerts_per_s": None, "storm_incidents": None, "storm_groups": None}
    found = measure_drain(600, 60, api=api, home=home)
    log(f"drain: {found}")
    return found


BEGIN, END = "<!-- quick:begin -->", "<!-- quick:end -->"

TARGETS = [  # (what, our key, bare Prefect's key, target)
    ("Alert to first action, p50", "alert_to_first_action_p50_s", "bare_prefect_first_task_p50_s", "<= 1.0 s and <= half of bare"),
    ("Alert to first action, p95", "alert_to_first_action_p95_s", "bare_prefect_first_task_p95_s", "<= 2.0 s"),
    ("Alert to first page delivered, p50", "first_page_p50_s", None, ""),
    ("Alert to first page delivered, p95", "first_page_p95_s", None, "<= 2.5 s"),
    ("Answer to next page, p50 (a resume)", "answer_to_next_page_p50_s", None, "<= 1.0 s"),
    ("Answer to next page, p95", "answer_to_next_page_p95_s", None, ""),
    ("Per step, runbook action (s)", "step_seconds_runbook", "step_seconds_hand_written", "<= 1.2x hand-written"),
    ("... once per run, its end: last POST to its final flush (s)", "step_records_tail_s", None, ""),
    ("Intake drain (alerts/s)", "drain_alerts_per_s", "bare_prefect_runs_per_s", ">= 200"),
    ("200 alerts of 200 groups at once: all waiting (s)", "burst_200_to_first_wait_s", None, "<= 60 s"),
    ("... the stack's peak memory meanwhile (MB, PSS)", "burst_peak_memory_mb", None, "< 1536"),
]


def render(results: dict) -> str:
    lines = [BEGIN, "## Warm start (`python -m bench quick`)", "",
             "Alert to action on the served stack (`app.stack serve`, warm forked runs, told by the server's events) next to",
             "bare Prefect (a hand-written flow served by `prefect.serve`, runner poll 1 s) in the same run, against one",
             "temporary Prefect server on SQLite, started as `runbook up` starts it (`app/prefect_server.py`: SQLite writes",
             "lock first; both sides gain). How each figure is taken: the docstring of `bench/quick.py`.", "",
             f"Machine: {results.get('cpus')} CPUs; load average {show(results.get('load_average'))} when it ended; "
             f"the run took {show(results.get('seconds'))} s.", "",
             "| figure | response-runbooks | bare Prefect | target |", "|---|---|---|---|"]
    lines += figure_rows(results, TARGETS)
    lines += ["", f"Step overhead ratio: {show(results.get('step_overhead_ratio'))}; storm: "
              f"{show(results.get('storm_incidents'))} incidents for {show(results.get('storm_groups'))} groups; "
              f"burst: {show(results.get('burst_waiting'))} of 200 waiting at the end.", "",
              "Where the burst's time and memory went (CPU seconds used during it, and PSS at its peak, per process tree): "
              + "; ".join(f"{name} {show(cpu)} CPU s, {show((results.get('burst_peak_memory_by_process_mb') or {}).get(name))} MB"
                          for name, cpu in (results.get("burst_cpu_seconds") or {}).items()) + ".", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench import sections

    argv = list(argv or [])
    as_json = "--json" in argv
    started = time.time()
    out = sys.stderr if as_json else sys.stdout
    log = lambda *a: print(f"[{time.time() - started:5.0f} s]", *a, file=out, flush=True)  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="bench-quick-")
    results = measure(Path(tmp), log)  # on failure the folder stays, with every part's log
    shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.time() - started, 1)
    results["load_average"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()
    if as_json:
        print(json.dumps(results))
        return 0
    print(json.dumps(results, indent=2))
    if "--no-write" not in argv:
        sections.write_section(render(results), BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
