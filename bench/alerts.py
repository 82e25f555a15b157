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

(c) **Drain**: ``measure_drain(n_alerts, n_groups)``: a storm spooled at once (generic alerts posted in
    one or a few requests, so the spool fills faster than it drains), timed from the first request
    until the spool is empty; then, on the same server, bare Prefect creating the storm's runs (one
    per group) with ``run_deployment`` in a loop. Its runs are of unserved deployments too.

(a) and (b) go to the "Alert intake" section of docs/BENCHMARKS.md, between
``<!-- alerts:begin -->`` and ``<!-- alerts:end -->``; (c) to the "Alert intake: drain" section
(``<!-- drain:begin -->``). ``--drain-only`` measures (c) alone; ``--no-write`` only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from bench import sections

from tests.alerts.procs import (ROOT, PrefectServer, Receiver, Recorder, Served, am_alert, am_notification,
                                count_flow_runs, flow_run, flow_runs, register_unserved, task_runs, wait_for)

BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- alerts:begin -->", "<!-- alerts:end -->"
DRAIN_BEGIN, DRAIN_END = "<!-- drain:begin -->", "<!-- drain:end -->"
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


# ---------------------------------------------------------------- (c) drain

DRAIN_RUNBOOK, BARE_RUNBOOK = "intake-hold", "intake-bare"  # unserved deployments: their runs stay Scheduled
POST_CHUNK = 1000   # alerts per request (well inside the receiver's 1 MiB body)
BENCH_SERVER = {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"}  # no Late marking of runs nobody serves


def drain_storm(n_alerts: int, n_groups: int, tag: str, seed: int = 11) -> list[dict[str, Any]]:
    """Generic alerts of the intake-hold route: every group once first (in random order), then repeats:
    a group's alerts are one of three instances, and about one in five is an exact re-send."""
    rng = random.Random(seed)
    starts = utc_now_text()
    order = list(range(n_groups))
    rng.shuffle(order)
    alerts: list[dict[str, Any]] = []
    for i in range(n_alerts):
        if i >= n_groups and rng.random() < 0.2:
            alerts.append(alerts[rng.randrange(len(alerts))])
            continue
        g = order[i] if i < n_groups else rng.randrange(n_groups)
        alerts.append({"status": "firing", "title": f"IntakeHoldDrain{g}", "starts_at": starts, "group": f"{tag}-{g}",
                       "labels": {"site": f"{tag}-{g}", "instance": rng.choice("abc"), "severity": "critical"}})
    return alerts


def spool_pending(state_dir: Path) -> int:
    """Pending spool rows, read without writing (a Store() would create its tables)."""
    with sqlite3.connect(f"file:{state_dir / 'intake.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM spool WHERE state = 'pending'").fetchone()[0]


def runs_by_group(api: str, flow_name: str, tag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in flow_runs(api, flow_name):
        site = ((run["parameters"] or {}).get("parameters") or {}).get("site", "")
        if site.startswith(f"{tag}-"):
            out[site] = out.get(site, 0) + 1
    return out


def bare_prefect(api: str, alerts: list[dict[str, Any]], tag: str) -> float:
    """Seconds bare Prefect takes to create one run per group of the storm: ``run_deployment`` in a loop,
    the group as idempotency key, in this process (pointed at ``api``)."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    firsts = list({a["group"]: a for a in alerts}.values())
    with temporary_settings(updates={PREFECT_API_URL: api}):
        run_deployment(f"{BARE_RUNBOOK}/runbook", parameters={"parameters": {"site": "warm-up"}}, timeout=0,
                       idempotency_key=f"{tag}:warm-up")
        began = time.perf_counter()
        for a in firsts:
            run_deployment(f"{BARE_RUNBOOK}/runbook", timeout=0, idempotency_key=f"{tag}:{a['group']}",
                           parameters={"parameters": {"site": a["labels"]["site"]}, "severity": "1", "alert": a},
                           tags=[f"runbook:{BARE_RUNBOOK}"])
        return time.perf_counter() - began


def measure_drain(n_alerts: int = 2000, n_groups: int = 100, *, api: str | None = None,
                  home: Path | None = None) -> dict[str, Any]:
    """The intake's drain against bare Prefect, on one Prefect server (``api``, else one of its own).

    Starts a receiver (``python -m app.stack intake``) on a fresh spool, posts ``n_alerts`` alerts of
    ``n_groups`` groups in requests of up to 1000, and times from the first request until the spool is
    empty. Returns drain_alerts_per_s, storm_incidents (runs started) and storm_groups (they must be
    equal), bare_prefect_runs_per_s (``run_deployment`` creating the same runs, one per group, in a
    loop) and the raw figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    procs: list = []
    tag = f"drain{int(time.time() * 1000) % 10**8}"
    try:
        if api is None:
            server = PrefectServer(tmp / "prefect", **BENCH_SERVER).start()
            procs.append(server)
            api, home = server.api, server.home
        home = Path(home) if home else tmp / "prefect"
        for runbook in (DRAIN_RUNBOOK, BARE_RUNBOOK):
            register_unserved(api, runbook)
        receiver = Receiver(api, home, tmp / "var", log=tmp / "receiver.log")
        procs.append(receiver)
        receiver.start()
        alerts = drain_storm(n_alerts, n_groups, tag)
        load = os.getloadavg()[0]

        began = time.perf_counter()
        for start in range(0, len(alerts), POST_CHUNK):
            r = receiver.http.post("/alerts/generic", json={"alerts": alerts[start:start + POST_CHUNK]}, timeout=120)
            r.raise_for_status()
            assert not r.json().get("rejected"), r.text
        spooled = time.perf_counter() - began
        wait_for(lambda: spool_pending(receiver.state_dir) == 0, DRAIN_TIMEOUT, "the drain", every=0.01)
        drained = time.perf_counter() - began
        rows = receiver.spool()
        runs = runs_by_group(api, DRAIN_RUNBOOK, tag)

        bare = bare_prefect(api, alerts, tag)
        bare_runs = runs_by_group(api, BARE_RUNBOOK, tag)
        return {
            "drain_alerts_per_s": round(n_alerts / drained, 1),
            "storm_incidents": sum(runs.values()),
            "storm_groups": n_groups,
            "bare_prefect_runs_per_s": round(len(bare_runs) / bare, 1),
            "drain_seconds": round(drained, 3),
            "spool_seconds": round(spooled, 3),
            "alerts": n_alerts,
            "alerts_done": sum(r["state"] == "done" for r in rows),
            "groups_with_one_incident": sum(n == 1 for n in runs.values()),
            "bare_prefect_runs": sum(bare_runs.values()),
            "bare_prefect_seconds": round(bare, 3),
            "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def render_drain(results: list[dict[str, Any]], took: float) -> str:
    import prefect

    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, Prefect {prefect.__version__}"
    rows = [f"| {r['alerts']} alerts, {r['storm_groups']} groups | **{r['drain_alerts_per_s']:.0f}** "
            f"({r['drain_seconds']:.2f} s) | {r['storm_incidents'] / r['drain_seconds']:.1f} | {r['storm_incidents']} "
            f"({'one per group' if r['storm_incidents'] == r['storm_groups'] == r['groups_with_one_incident'] else 'NOT one per group'}) "
            f"| {r['alerts_done']} of {r['alerts']} | {r['bare_prefect_runs_per_s']:.1f} ({r['bare_prefect_runs']} runs in "
            f"{r['bare_prefect_seconds']:.1f} s) | {r['load_before']:.1f} / {r['load_after']:.1f} |" for r in results]
    return "\n".join([
        DRAIN_BEGIN,
        "## Alert intake: drain",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m bench.alerts --drain-only` ({took:.0f} s) on "
        f"{machine}; a Prefect server of its own on SQLite (Late marking off: the runs' deployments are served by "
        "nobody), the receiver `python -m app.stack intake`, everything on loopback.",
        "",
        "A storm spooled at once: generic alerts (every group first, then its three instances at random, one in five "
        "an exact re-send) posted in requests of up to 1000, timed from the first request until the spool is empty. "
        "Bare Prefect is `run_deployment(..., idempotency_key=<group>, timeout=0)` in a loop, creating the same number "
        "of runs (one per group) on the same server right after.",
        "",
        "| storm | drain: alerts/s (time) | drain: runs created/s | incidents started | alerts handled "
        "| bare Prefect: runs/s | 1-min load before / after |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "How: `app/intake.py` reads up to 200 pending alerts at a time, asks whether the batch's incidents are open in "
        "one request (a count of those not closed; each run is read only when some are), creates the incidents its groups' first alerts start in one bulk create (Prefect's "
        "`create_flow_run/bulk`, up to 100 runs a request), hands each group's alerts over in spool order on up to 4 "
        "lanes side by side and marks the batch done in one transaction; `flows/launch.py` `Launcher` keeps one client "
        "and the deployment ids. Target: at least 200 alerts/s. Each group costs the server one flow run to create (and "
        "each alert one `runbook.alert.*` event to take in): compare the drain's runs created per second with bare "
        "Prefect's (`run_deployment`, one run at a time) on the same server. Load above 2 "
        "on this 2-CPU machine makes every figure here slower (other test runs share it).",
        "",
        "Reproduce: `.venv/bin/python -m bench.alerts --drain-only` (`--drain N:G` for other sizes, repeatable); "
        "from code, `bench.alerts.measure_drain(n_alerts, n_groups)` returns the figures as a dict.",
        DRAIN_END,
    ])


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
    parser.add_argument("--drain", action="append", metavar="N:G",
                        help="(c) a storm of N alerts over G groups (repeatable; default 300:60 and 2000:100)")
    parser.add_argument("--drain-only", action="store_true", help="measure (c) alone and rewrite only its section")
    parser.add_argument("--no-write", action="store_true", help="print the results; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(x) for x in size.split(":")) for size in args.drain or ["300:60", "2000:100"]]

    began = time.monotonic()
    drains = []
    for n_alerts, n_groups in sizes:
        print(f"(c) drain: {n_alerts} alerts over {n_groups} groups", flush=True)
        drains.append(measure_drain(n_alerts, n_groups))
        print(f"  {json.dumps(drains[-1])}", flush=True)
    drain_text = render_drain(drains, time.monotonic() - began)
    print(drain_text)
    if not args.no_write:
        sections.write_section(drain_text, DRAIN_BEGIN, DRAIN_END)
        print(f"wrote the drain section of {BENCHMARKS.relative_to(ROOT)}")
    drains_ok = all(d["storm_incidents"] == d["storm_groups"] and d["alerts_done"] == d["alerts"] for d in drains)
    if args.drain_only:
        return 0 if drains_ok else 1

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
    ok = storm.flow_runs == args.groups and storm.statuses.get(202, 0) == args.notifications and drains_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
