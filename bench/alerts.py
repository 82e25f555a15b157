"""Alert intake benchmark: ``python -m bench.alerts``.

Runs on loopback only, against processes of its own that it stops when done:
a Prefect server (temporary PREFECT_HOME), the fixture runbooks of
tests/fixtures/intake served by ``python -m app.stack serve``
(PREFECT_RUNNER_POLL_FREQUENCY=1) and the receiver ``python -m app.stack intake``.

(a) **Latency**: an Alertmanager notification posted to the receiver, until the
    runbook's first step is running. One alert at a time (each run is resolved
    and finishes before the next alert), after one warm-up alert that is not
    counted. "Arrival" is the spool row's ``received_at`` (written by the receiver
    before it answers 202); "first step running" is the start time Prefect gives
    the first step's task run. Both clocks are this machine's.
(b) **Storm**: a thousand Alertmanager notifications for fifty groups, paced over
    under a minute, with HA-pair duplicates and repeats; the receiver's response
    times (measured by the sender, over keep-alive connections) and, once the
    spool has drained, the number of flow runs, which must be exactly fifty. The
    storm's runbook (intake-hold) is registered but not served, so its runs stay
    Scheduled (open) and only the intake's work is measured.

The results go to the "Alert intake" section of docs/BENCHMARKS.md, between
``<!-- alerts:begin -->`` and ``<!-- alerts:end -->`` (``--no-write`` only prints them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import sections

from tests.alerts.procs import (ROOT, PrefectServer, Receiver, Recorder, Served, am_alert, am_notification,
                                count_flow_runs, flow_run, flow_runs, register_unserved, task_runs, wait_for)

BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- alerts:begin -->", "<!-- alerts:end -->"
SAMPLE_TIMEOUT = 120.0   # one latency sample: alert -> first step -> resolved -> run finished
DRAIN_TIMEOUT = 600.0    # the storm's spool to empty


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def utc_now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- (a) latency


@dataclass
class Sample:
    created: float      # arrival -> flow run created (the intake's drain)
    running: float      # arrival -> flow run Running (runner poll, process start)
    first_step: float   # arrival -> first step's task run Running
    reported: float     # arrival -> the first step's HTTP request reached the recorder


def one_sample(receiver: Receiver, recorder: Recorder, api: str, n: int) -> Sample:
    labels = {"alertname": "IntakeWatchBench", "service": f"bench-{n}", "site": "bench", "severity": "critical"}
    annotations = {"summary": f"bench alert {n}", "recorder": recorder.url}
    starts = utc_now_text()
    group = f'{{}}:{{alertname="IntakeWatchBench", service="bench-{n}"}}'
    r = receiver.post("alertmanager", am_notification(group, [am_alert(labels, starts, annotations=annotations)]))
    r.raise_for_status()
    spool_id = r.json()["accepted"][0]["spool_id"]

    def started():
        row = next((row for row in receiver.spool() if row["id"] == spool_id), None)
        return row if row and row["state"] == "done" else None

    row = wait_for(started, SAMPLE_TIMEOUT, f"sample {n} to start an incident", every=0.02)
    arrival = parse_time(row["received_at"])
    run_id = row["outcome"].split()[-1]

    def first_step():
        runs = [t for t in task_runs(api, run_id) if t["name"] == "record-alert" and t.get("start_time")]
        return runs[0] if runs else None

    task = wait_for(first_step, SAMPLE_TIMEOUT, f"sample {n}'s first step to run", every=0.1)
    call = wait_for(lambda: recorder.for_run(run_id), SAMPLE_TIMEOUT, f"sample {n}'s first step to report", every=0.05)
    run = flow_run(api, run_id)

    # resolve it and let the run finish, so the next sample has the runner to itself
    resolved = am_alert(labels, starts, status="resolved", ends=utc_now_text(), annotations=annotations)
    receiver.post("alertmanager", am_notification(group, [resolved], status="resolved")).raise_for_status()
    done = wait_for(lambda: (s := flow_run(api, run_id)["state"]) and s["type"] in ("COMPLETED", "FAILED", "CRASHED",
                                                                                   "CANCELLED") and s,
                    SAMPLE_TIMEOUT, f"sample {n}'s run to finish", every=0.2)
    if done["type"] != "COMPLETED":
        raise RuntimeError(f"sample {n}: run {run_id} ended {done['type']}: {done.get('message')}")
    return Sample(created=parse_time(run["created"]) - arrival, running=parse_time(run["start_time"]) - arrival,
                  first_step=parse_time(task["start_time"]) - arrival, reported=call[0]["at"] - arrival)


def measure_latency(receiver: Receiver, recorder: Recorder, api: str, samples: int) -> list[Sample]:
    one_sample(receiver, recorder, api, 0)  # warm-up: first imports, first connections
    out = []
    for n in range(1, samples + 1):
        out.append(one_sample(receiver, recorder, api, n))
        print(f"  latency sample {n}/{samples}: first step after {out[-1].first_step:.2f} s", flush=True)
    return out


# ---------------------------------------------------------------- (b) storm


@dataclass
class Storm:
    notifications: int
    groups: int
    alerts_spooled: int = 0
    duplicates: int = 0
    send_seconds: float = 0.0
    response_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    drained_after: float = 0.0   # seconds from the last notification until the spool was empty
    flow_runs: int = 0
    runs_per_group: dict[int, int] = field(default_factory=dict)


def storm_bodies(notifications: int, groups: int, seed: int = 7) -> tuple[list[dict], int]:
    """Alertmanager notifications: each group has three alerts; a notification carries one to three of them.
    About one in five is an exact re-send of an earlier one (an HA pair, a repeat)."""
    rng = random.Random(seed)
    starts = utc_now_text()
    bodies, duplicates = [], 0
    order = list(range(groups))
    rng.shuffle(order)
    for i in range(notifications):
        if i >= groups and rng.random() < 0.2:
            bodies.append(bodies[rng.randrange(len(bodies))])
            duplicates += 1
            continue
        g = order[i] if i < groups else rng.randrange(groups)  # every group appears early, then at random
        alerts = [am_alert({"alertname": f"IntakeHoldStorm{g}", "site": f"storm-{g}", "instance": inst,
                            "severity": "critical"}, starts)
                  for inst in rng.sample(["a", "b", "c"], rng.randint(1, 3))]
        bodies.append(am_notification(f'{{}}:{{alertname="IntakeHoldStorm{g}", site="storm-{g}"}}', alerts))
    return bodies, duplicates


def alert_storm(receiver: Receiver, api: str, notifications: int, groups: int, seconds: float, workers: int = 8) -> Storm:
    bodies, duplicates = storm_bodies(notifications, groups)
    storm = Storm(notifications, groups, alerts_spooled=sum(len(b["alerts"]) for b in bodies), duplicates=duplicates)
    local = threading.local()
    lock = threading.Lock()
    interval = seconds / notifications
    t0 = time.monotonic() + 0.5

    def send(i: int) -> None:
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=receiver.url, timeout=30,
                                                 headers={"Authorization": f"Bearer {receiver.token}"})
        began = time.perf_counter()
        r = client.post("/alerts/alertmanager", content=json.dumps(bodies[i]), headers={"Content-Type": "application/json"})
        took = (time.perf_counter() - began) * 1000
        with lock:
            storm.response_ms.append(took)
            storm.statuses[r.status_code] = storm.statuses.get(r.status_code, 0) + 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, range(notifications)))
    sent = time.monotonic()
    storm.send_seconds = sent - t0
    wait_for(lambda: receiver.pending() == 0, DRAIN_TIMEOUT, "the storm's spool to drain", every=0.2)
    storm.drained_after = time.monotonic() - sent
    storm.flow_runs = count_flow_runs(api, "intake-hold")
    for run in flow_runs(api, "intake-hold"):
        g = int(run["parameters"]["parameters"]["site"].removeprefix("storm-"))
        storm.runs_per_group[g] = storm.runs_per_group.get(g, 0) + 1
    return storm


# ---------------------------------------------------------------- report


def render(latency: list[Sample], storm: Storm, took: float, load: tuple[float, float]) -> str:
    import prefect

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {median(values):.2f} s | {percentile(values, 95):.2f} s | {max(values):.2f} s |"

    ms = storm.response_ms
    rejected = {k: v for k, v in storm.statuses.items() if k != 202}
    exact = storm.flow_runs == storm.groups and all(storm.runs_per_group.get(g) == 1 for g in range(storm.groups))
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Prefect {prefect.__version__}"
    return "\n".join([
        BEGIN,
        "## Alert intake",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} by `python -m bench.alerts` ({took / 60:.0f} min) on {machine}; "
        "Prefect server on SQLite, everything on loopback; "
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after.",
        "",
        f"**Alert to first step** ({len(latency)} alerts, one at a time, after one warm-up). From the alert's arrival at the "
        "receiver (the spool row's `received_at`, written before the 202) to:",
        "",
        "| until | median | p95 | max |",
        "|---|---|---|---|",
        row("flow run created (the intake hands it to Prefect)", [s.created for s in latency]),
        row("flow run Running (runner poll every 1 s, flow process started)", [s.running for s in latency]),
        row("**first step's task run Running**", [s.first_step for s in latency]),
        row("first step's HTTP request received (the step doing its work)", [s.reported for s in latency]),
        "",
        "Most of it is the served runner: it polls for scheduled runs every `PREFECT_RUNNER_POLL_FREQUENCY` "
        "(1 s in `runbook up`) and starts each flow run in a new Python process.",
        "",
        f"**Alert storm**: {storm.notifications} Alertmanager notifications for {storm.groups} groups "
        f"({storm.alerts_spooled} alerts; {storm.duplicates} notifications exact re-sends, the rest 1-3 alerts "
        f"of a group, so repeats throughout) sent in {storm.send_seconds:.0f} s by 8 senders.",
        "",
        "| | |",
        "|---|---|",
        f"| answered 202 | {storm.statuses.get(202, 0)} of {storm.notifications}"
        + (f" (others: {rejected})" if rejected else "") + " |",
        f"| receiver response time, median / p95 / **p99** / max | {median(ms):.0f} / {percentile(ms, 95):.0f} / "
        f"**{percentile(ms, 99):.0f}** / {max(ms):.0f} ms |",
        f"| spool empty after the last notification | {storm.drained_after:.0f} s "
        f"({storm.alerts_spooled / (storm.send_seconds + storm.drained_after):.0f} alerts/s handed over overall) |",
        f"| flow runs started | **{storm.flow_runs}** ({'exactly one per group' if exact else 'NOT one per group: ' + str(storm.runs_per_group)}) |",
        "",
        "The storm's runbook is registered but not served (its runs stay Scheduled, i.e. open), so this measures the "
        "receiver and the intake's drain, not how fast a machine can start fifty flow processes.",
        "",
        "Reproduce: `.venv/bin/python -m bench.alerts` (a few minutes; starts and stops its own Prefect server, "
        "served runbooks and receiver on free loopback ports; rewrites this section). "
        "`--no-write` only prints; `--samples`, `--notifications`, `--groups`, `--seconds` change the sizes.",
        END,
    ])


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace the alerts section between its markers; other sections are left as they are."""
    sections.write_section(text, BEGIN, END, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="latency samples (default 20)")
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=50, help="the storm is paced over this many seconds (default 50)")
    parser.add_argument("--no-write", action="store_true", help="print the results; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)

    began, load_before = time.monotonic(), os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    home = tmp / "prefect"
    procs: list = []
    recorder = Recorder()
    try:
        print(f"starting a Prefect server, the served fixture runbooks and the receiver under {tmp}", flush=True)
        server = PrefectServer(home).start()
        procs.append(server)
        served = Served(server.api, home, log=tmp / "serve.log", RUNBOOK_INCIDENTS_DIR=str(tmp / "incidents"))
        procs.append(served)
        served.start(["intake-watch"])
        register_unserved(server.api, "intake-hold")
        receiver = Receiver(server.api, home, tmp / "var", log=tmp / "receiver.log")
        procs.append(receiver)
        receiver.start()

        print(f"(a) latency, {args.samples} samples", flush=True)
        latency = measure_latency(receiver, recorder, server.api, args.samples)
        print(f"(b) storm: {args.notifications} notifications, {args.groups} groups, over {args.seconds:.0f} s", flush=True)
        storm = alert_storm(receiver, server.api, args.notifications, args.groups, args.seconds)
    finally:
        recorder.close()
        for proc in reversed(procs):
            proc.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    text = render(latency, storm, time.monotonic() - began, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the alert intake section of {BENCHMARKS.relative_to(ROOT)}")
    ok = storm.flow_runs == args.groups and storm.statuses.get(202, 0) == args.notifications
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
