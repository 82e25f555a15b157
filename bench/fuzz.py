"""Fuzzing a running intake: ``python -m bench fuzz`` (or ``python -m bench.fuzz``).

Runs on loopback only, against processes of its own that it stops when done: a
Prefect server (temporary PREFECT_HOME) with the deployment ``intake-hold/runbook``
registered but not served (its runs stay Scheduled, so only the intake's work is
measured), and the receiver ``python -m app.stack intake 127.0.0.1 PORT`` with a
token, the routes below and a state directory of its own.

It sends 10,000 requests (seeded, so repeatable) built from real Alertmanager,
Grafana (unified and legacy), PagerDuty Events v2 (PagerDuty's own example,
Zabbix's media type) and generic payloads, each broken in one of the ways of
tests/alerts/fuzzing.py: structure (deletions, type swaps, insertions), lone
surrogates, numbers of over 4,300 digits, invalid UTF-8, deep nesting, strings
over the limit, notifications mixing good and bad alerts, truncated bodies and
random bytes. It counts answers by status, 5xx, connection failures, mixed
notifications whose good alert was not taken, and the receiver's resident memory
(VmRSS) before, right after, and after a pause; then it sends one good alert and
waits for its flow run.

The results go to the "Fuzzing a running intake" section of docs/BENCHMARKS.md,
between ``<!-- fuzz:begin -->`` and ``<!-- fuzz:end -->`` (``--no-write`` only prints them).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import sections

from tests.alerts.fuzzing import fuzz_request
from tests.alerts.procs import (ROOT, PrefectServer, Receiver, am_alert, am_notification, count_flow_runs, flow_runs,
                                register_unserved, wait_for)

BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"
MEMORY_TOLERANCE = 0.20  # memory after must be within this fraction of before
SETTLE_SECONDS = 5.0

# The fixtures' HIS alerts and everything else routed to the unserved runbook: good alerts in
# mixed notifications really are spooled and handed to Prefect; what no route takes is only logged.
ROUTES = """
routes:
  - name: fuzz-his
    match: ['alertname=~"HIS.*|His.*"']
    runbook: intake-hold
    parameters: {site: {label: site, default: fuzz}}
  - name: hold
    match: ['alertname=~"IntakeHold.*"']
    runbook: intake-hold
    parameters: {site: labels.site}
fallback: {enabled: false}
"""


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Result:
    requests: int
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    connection_failures: int = 0
    failures: list[str] = field(default_factory=list)
    mixed: int = 0
    mixed_good_lost: int = 0
    rss_before: int = 0
    rss_after: int = 0
    rss_settled: int = 0
    alive: bool = False
    good_after: str = ""
    good_after_seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def memory_ok(self) -> bool:
        return self.rss_settled <= self.rss_before * (1 + MEMORY_TOLERANCE)

    @property
    def ok(self) -> bool:
        return (self.server_errors == 0 and self.connection_failures == 0 and self.alive and self.memory_ok
                and self.mixed_good_lost == 0 and bool(self.good_after))


def warm_up(receiver: Receiver) -> None:
    """Every source once, good and bad, so imports and first allocations are behind us before measuring."""
    rng = random.Random(-1)
    with httpx.Client(base_url=receiver.url, headers={"Authorization": f"Bearer {receiver.token}"}, timeout=30) as client:
        for _ in range(200):
            req = fuzz_request(rng)
            client.post(req.path, content=req.body, headers={"Content-Type": "application/json"})


def fuzz(receiver: Receiver, requests: int, seed: int, workers: int) -> Result:
    result = Result(requests)
    rng = random.Random(seed)
    planned = [fuzz_request(rng) for _ in range(requests)]
    local = threading.local()
    lock = threading.Lock()

    def send(i: int) -> None:
        req = planned[i]
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=receiver.url, timeout=60,
                                                 headers={"Authorization": f"Bearer {receiver.token}"})
        try:
            r = client.post(req.path, content=req.body, headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            with lock:
                result.connection_failures += 1
                result.failures.append(f"#{i} {req.kind} {req.source}: {type(exc).__name__}: {exc}")
            return
        lost = False
        if req.good_index is not None:
            answer = r.json() if r.status_code == 202 else {}
            taken = [a["index"] for a in answer.get("accepted", []) + answer.get("unrouted", [])]
            lost = req.good_index not in taken
        with lock:
            result.statuses[r.status_code] += 1
            result.by_kind.setdefault(req.kind, Counter())[r.status_code] += 1
            if r.status_code >= 500:
                result.failures.append(f"#{i} {req.kind} {req.source}: {r.status_code} {r.text[:200]}")
            if req.good_index is not None:
                result.mixed += 1
                result.mixed_good_lost += lost

    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, range(requests)))
    result.seconds = time.monotonic() - began
    return result


def good_alert_after(receiver: Receiver, api: str) -> tuple[str, float]:
    """One good Alertmanager alert; the id of the flow run it started, and how long that took."""
    labels = {"alertname": "IntakeHoldAfterFuzz", "site": "after-fuzz", "severity": "critical"}
    starts = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    began = time.monotonic()
    r = receiver.post("alertmanager", am_notification("after-fuzz", [am_alert(labels, starts)]))
    if r.status_code != 202 or not r.json()["accepted"]:
        raise RuntimeError(f"the good alert after the fuzzing was not accepted: {r.status_code} {r.text[:300]}")

    def started():
        runs = [run for run in flow_runs(api, "intake-hold") if run["parameters"]["parameters"].get("site") == "after-fuzz"]
        return runs[0]["id"] if runs else None

    run_id = wait_for(started, 600, "the good alert's flow run", every=0.5)
    return run_id, time.monotonic() - began


def render(result: Result, seed: int, workers: int, took: float, load: tuple[float, float], runs: int) -> str:
    import prefect

    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"Prefect {prefect.__version__}")
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    kinds = [f"| {kind} | {sum(c.values())} | " + ", ".join(f"{s}: {n}" for s, n in sorted(c.items())) + " |"
             for kind, c in sorted(result.by_kind.items())]
    mib = lambda kib: f"{kib / 1024:.1f} MiB"  # noqa: E731
    growth = (result.rss_settled - result.rss_before) / result.rss_before * 100
    return "\n".join([
        BEGIN,
        "## Fuzzing a running intake",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} by `python -m bench fuzz` ({took / 60:.0f} min) on {machine}; "
        f"receiver `python -m app.stack intake` on loopback with a token, Prefect server on SQLite; "
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after.",
        "",
        f"**{result.requests} fuzzed requests** (seed {seed}, {workers} senders over keep-alive connections, "
        f"{result.seconds:.0f} s) built from real Alertmanager, Grafana (unified and legacy), PagerDuty Events v2 "
        "(PagerDuty's own example, Zabbix's media type) and generic payloads, each broken one way "
        "(`tests/alerts/fuzzing.py`):",
        "",
        "| | |",
        "|---|---|",
        f"| **answered 5xx** | **{result.server_errors}** |",
        f"| **connection failures** | **{result.connection_failures}** |",
        f"| answers by status | {statuses} |",
        f"| notifications mixing good and bad alerts | {result.mixed}; good alert not taken in **{result.mixed_good_lost}** |",
        f"| receiver alive afterwards | {'**yes**' if result.alive else '**NO**'} |",
        f"| receiver memory (VmRSS): before (after a warm-up) / right after / after {SETTLE_SECONDS:.0f} s | "
        f"{mib(result.rss_before)} / {mib(result.rss_after)} / **{mib(result.rss_settled)}** "
        f"({growth:+.1f} %; limit +{MEMORY_TOLERANCE * 100:.0f} %) |",
        f"| a good alert sent afterwards | {'**started its incident**' if result.good_after else '**did not start**'}"
        f" (flow run created {result.good_after_seconds:.1f} s after it was sent) |",
        f"| flow runs the fuzzing itself started | {runs} (good alerts of mixed notifications; one per group and episode) |",
        "",
        "| kind | requests | answers |",
        "|---|---|---|",
        *kinds,
        "",
        "Reproduce: `.venv/bin/python -m bench fuzz` (starts and stops its own Prefect server and receiver on free loopback "
        "ports; rewrites this section). `--no-write` only prints; `--requests`, `--seed`, `--workers` change the run.",
        END,
    ])


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace the fuzz section between its markers; other sections are left as they are."""
    sections.write_section(text, BEGIN, END, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print the results; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)

    began, load_before = time.monotonic(), os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    home = tmp / "prefect"
    procs: list = []
    try:
        print(f"starting a Prefect server and the receiver under {tmp}", flush=True)
        server = PrefectServer(home)
        procs.append(server)  # stopped in `finally` even if it never came up
        server.start(timeout=300)  # a loaded machine can take minutes
        register_unserved(server.api, "intake-hold")
        routes = tmp / "routes.yaml"
        routes.write_text(ROUTES, encoding="utf-8")
        receiver = Receiver(server.api, home, tmp / "var", routes=routes, log=tmp / "receiver.log")
        procs.append(receiver)
        receiver.start(timeout=300)
        pid = receiver.proc.pid

        warm_up(receiver)
        wait_for(lambda: receiver.pending() == 0, 900, "the warm-up's spool to drain", every=0.5)
        time.sleep(SETTLE_SECONDS)
        rss_before = rss_kib(pid)
        print(f"fuzzing: {args.requests} requests, seed {args.seed}, {args.workers} senders; RSS {rss_before / 1024:.1f} MiB",
              flush=True)
        result = fuzz(receiver, args.requests, args.seed, args.workers)
        result.rss_before, result.rss_after = rss_before, rss_kib(pid)
        wait_for(lambda: receiver.pending() == 0, 900, "the spool to drain", every=0.5)
        time.sleep(SETTLE_SECONDS)
        result.rss_settled = rss_kib(pid)
        result.alive = receiver.proc.poll() is None and receiver.healthz()["status"] == "ok"
        result.good_after, result.good_after_seconds = good_alert_after(receiver, server.api)
        runs = count_flow_runs(server.api, "intake-hold") - 1
        for line in result.failures[:20]:
            print("  " + line)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    text = render(result, args.seed, args.workers, time.monotonic() - began, (load_before, os.getloadavg()[0]), runs)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the fuzzing section of {BENCHMARKS.relative_to(ROOT)}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
