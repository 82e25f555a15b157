"""Escalation tiers of many suspended waits while the runbook's concurrency limit holds a queue (issue #11).

``python -m bench escalation`` (about 6 minutes on two cores). One temporary Prefect server (SQLite), and on it,
as `runbook up` has them: the served runbooks (``python -m app.stack serve``: warm forked runs) and one escalation
watcher (``python -m app.stack watcher 1``); a local endpoint stands in for the pager (a webhook channel) and for a
system that keeps an incident busy.

The runbook (``escalation-bench``, ``concurrency_limit: 20``): a manual step with one escalation tier (``after: 10m``
of plan time) and, for a busy incident (``busy: yes``), instead an action whose HTTP request the endpoint holds until
the bench ends. Each waiting incident gets the time scale that ends its 10 minutes ``--due-after`` (330) real seconds
after the first start, so every tier comes due at about the same moment: the hardest case for a watcher pass.

1. Up to ``--incidents`` (250) incidents are started, never more than the limit at once unsuspended (so none waits
   for a slot while they start), until all are Suspended at the manual step; launching stops early when the first
   tier would come due (then fewer are measured, and the report says how many).
2. ``limit + --queued`` busy incidents are started: ``limit`` of them hold every slot of the runbook, the rest wait
   ``AwaitingConcurrencySlot``; the bench samples both while the tiers come due.
3. For each waiting incident: lateness = its tier page's arrival at the webhook minus the tier's due time (the
   ``at`` of the tier in the wait's ``who`` record, tasks/people.py). A tier is paged by the watcher itself
   (flows/escalation.py ``page_due_tiers``), without waking the run: no process, no slot.
4. ``runbook pending`` (flows/answers.py ``pending_steps``) must list every waiting incident.

The watcher's pass times come from its log ("pass done in X s"), for the passes while tiers came due.
There is no bare-Prefect equivalent of an escalation tier (Prefect has no timer on a paused run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from bench.sections import show

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = "escalation-bench"
BEGIN, END = "<!-- escalation:begin -->", "<!-- escalation:end -->"
PLAN_AFTER_SECONDS = 600  # the tier's `after: 10m`, in plan time
LIMIT = 20
LEAD = 75  # seconds before the tiers come due when launching stops: the busy incidents start then, ahead of them
BEFORE = ("How it got here, all on this machine with 250 incidents on PostgreSQL unless said (lateness median / p95 / "
          "max, and how many within 10 s): 2026-11-30 19:54, lanes that ended with their pass: 15.03 / 25.34 / 27.57 s, 77 "
          "of 250. 20:09, lanes that outlive a pass (flows/lanes.py): 10.41 / 16.53 / 18.72 s, 110. 20:20, one TLS context "
          "per process for the project's clients (tasks/client.py; Prefect builds one per client, 50 ms of CPU) and the "
          "lanes' clients kept for the claims under them: 9.93 / 16.18 / 18.12 s, 126. 20:31, no pass while the lanes have "
          "a backlog: 8.01 / 16.51 / 18.27 s, 155 (the PostgreSQL section). On SQLite, 19:30 (before all of these): only 161 of 250 reached their wait in 257 s "
          "(the server answered 503, busy, to the bench's own calls throughout), and of those, 8.71 / 15.04 / 16.43 s, 98 "
          "of 161; 23:41, with all of these and the server's SQLite writes locking first (app/prefect_server.py: no more "
          "503), tiers due 240 s after the first start: 199 of 250 reached their wait in time, every one of the 199 paged "
          "within 10 s (3.62 / 7.80 / 8.81 s); the tiers then came due 330 s after, so that all 250 wait: 7.48 / 13.91 / 16.12 s, 185 "
          "of 250 on SQLite. 2026-12-01, a tier's page no longer writes the wait's record again (its claim says it was "
          "paged; the record's delete and create were 43 % of a lane's time): SQLite 1.85 / 3.42 / 4.23 s, 250 of 250 "
          "(241 just before); PostgreSQL, its tiers due within 8 s, 5.47 / 10 / 10.79 s, 238 of 250. Then the records "
          "of the waits read up to 30 s before their first timer, so a due tier is a claim and a page: the tables.")

ESCALATION_RUNBOOK = f"""\
id: {RUNBOOK}
title: {{zh: 升级基准, en: Escalation benchmark}}
description: {{zh: 基准用预案, en: Benchmark runbook}}
source: {{plan: 9, title: 基准}}
concurrency_limit: {LIMIT}
parameters:
  base_url: {{type: string, label: {{zh: 地址, en: Base URL}}}}
  n: {{type: string, label: {{zh: 编号, en: Number}}, default: "0"}}
  busy: {{type: string, label: {{zh: 忙, en: Busy}}, default: "no"}}
roles:
  chief-operator: {{label: {{zh: 主值, en: Chief operator}}}}
  duty-manager: {{label: {{zh: 值班经理, en: Duty manager}}}}
lead: chief-operator
steps:
  - id: hold
    kind: action
    title: {{zh: 忙, en: Busy}}
    when: "params.busy == 'yes'"
    http: {{method: POST, url: "{{{{ params.base_url }}}}/hold/{{{{ params.n }}}}", json: {{}}, timeout: 20m}}
  - id: confirm
    kind: manual
    title: {{zh: 确认, en: Confirm}}
    when: "params.busy != 'yes'"
    escalation:
      - after: 10m
        notify: [duty-manager]
"""


class Endpoint:
    """The pager's webhook (`/page/tier`: arrival time per incident) and the busy incidents' held requests (`/hold/`)."""

    def __init__(self) -> None:
        self.pages: dict[str, list[float]] = {}
        self.holding = 0
        self.held = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/page/"):
                    incident = json.loads(body or b"{}").get("incident_id", "?")
                    with outer.lock:
                        outer.pages.setdefault(self.path.rsplit("/", 1)[1] + ":" + incident, []).append(time.time())
                elif self.path.startswith("/hold/"):
                    with outer.lock:
                        outer.holding += 1
                        outer.held += 1
                    outer.release.wait(1500)
                    with outer.lock:
                        outer.holding -= 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # a busy incident's process stopped at the end of the bench
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def tier_pages(self) -> dict[str, list[float]]:
        with self.lock:
            return {k.split(":", 1)[1]: list(v) for k, v in self.pages.items() if k.startswith("tier:")}

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


def write_config(home: Path, base_url: str) -> dict[str, str]:
    runbooks = home / "runbooks"
    runbooks.mkdir()
    (runbooks / f"{RUNBOOK}.yaml").write_text(ESCALATION_RUNBOOK, encoding="utf-8")
    (home / "contacts.yaml").write_text(textwrap.dedent(f"""\
        people:
          - id: chief
            name: Chief
            roles: [chief-operator]
            channels: [{{channel: webhook, to: "{base_url}/page/chief"}}]
          - id: manager
            name: Manager
            roles: [duty-manager]
            channels: [{{channel: webhook, to: "{base_url}/page/tier"}}]
        """), encoding="utf-8")
    (home / "routes.yaml").write_text("routes: []\n", encoding="utf-8")
    return {"RUNBOOK_RUNBOOKS_DIR": str(runbooks), "RUNBOOK_CONTACTS_FILE": str(home / "contacts.yaml"),
            "RUNBOOK_ROUTES_FILE": str(home / "routes.yaml")}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def runs_of(client, state_type: str, name: str | None = None) -> list:
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName,
                                                FlowRunFilterStateType, FlowRunFilterTags)

    from flows.answers import all_flow_runs

    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[state_type]),
                               name=FlowRunFilterStateName(any_=[name]) if name else None)
    return list(all_flow_runs(client, FlowRunFilter(state=state, tags=FlowRunFilterTags(all_=[f"runbook:{RUNBOOK}"]))))


def count_of(client, state_type: str, name: str | None = None) -> int:
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName,
                                                FlowRunFilterStateType, FlowRunFilterTags)

    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[state_type]),
                               name=FlowRunFilterStateName(any_=[name]) if name else None)
    return client.count_flow_runs(flow_run_filter=FlowRunFilter(state=state, tags=FlowRunFilterTags(all_=[f"runbook:{RUNBOOK}"])))


def watcher_passes(log_file: Path, since: float, until: float) -> list[float]:
    """The watcher's pass times ("pass done in X s") logged between these times (time.time())."""
    out = []
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        found = re.match(r"(\S+ \S+) watcher pass done in ([0-9.]+) s", line)
        if found:
            at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if since <= at <= until:
                out.append(float(found.group(2)))
    return out


def measure(home: Path, incidents: int, queued: int, due_after: float, log=print, database: str | None = None) -> dict:
    from bench.quick import Stack
    from bench.speed import child_env, start_server
    from tests.alerts.procs import stop_process, wait_for

    endpoint = Endpoint()
    prefect_proc, api = start_server(home, **({"PREFECT_API_DATABASE_CONNECTION_URL": database} if database else {}))
    env = {**child_env(home, api), **write_config(home, endpoint.url), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "RUNBOOK_WEBHOOK_TIMEOUT": "10"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("RUNBOOK_")})
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"})
    from prefect.context import refresh_global_settings_context

    from runbooks.settings import get_settings

    get_settings.cache_clear()
    refresh_global_settings_context()
    stack = Stack(home, api, env)
    results: dict = {"target": incidents, "queued_target": queued, "limit": LIMIT, "due_after_s": due_after,
                     "database": "PostgreSQL" if database else "SQLite"}
    try:
        stack.start("serve", ["-m", "app.stack", "serve"])
        stack.start("watcher", ["-m", "app.stack", "watcher", "1"])

        def ready() -> bool:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {home / (name + '.log')}")
            try:
                return httpx.get(f"{api}/deployments/name/{RUNBOOK}/runbook", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "the served stack", every=0.5)
        log("stack ready")
        results.update(run_scenario(endpoint, incidents, queued, due_after, home, log))
    finally:
        endpoint.release.set()
        stack.stop()
        stop_process(prefect_proc, timeout=20)
        endpoint.stop()
    return results


def run_scenario(endpoint: Endpoint, incidents: int, queued: int, due_after: float, home: Path, log) -> dict:
    from prefect.client.orchestration import get_client

    from flows.answers import pending_steps
    from flows.launch import Launcher
    from tasks.inputs import read_json, who_key

    launcher = Launcher()
    reader = get_client(sync_client=True)  # reads: Prefect's client asks again when a busy SQLite server answers 503
    client = reader.__enter__()

    def start(n: str, busy: str = "no", time_scale: float = 1.0) -> None:
        """One incident; a busy SQLite server (503) is asked again, under the same idempotency key."""
        for attempt in range(30):
            try:
                launcher.start_incident(RUNBOOK, {"base_url": endpoint.url, "n": n, "busy": busy}, incident=n,
                                        idempotency_key=n, time_scale=time_scale)
                return
            except Exception as exc:  # noqa: BLE001
                if attempt == 29:
                    raise
                if attempt == 0:
                    log(f"starting {n}: {exc!r}; asking again every second")
                time.sleep(1)

    # 1. the waiting incidents, never more than the limit unsuspended at once
    began = time.time()
    together = began + due_after  # every tier comes due then: each incident's time scale makes its 10m end there
    stop_launching = together - LEAD
    scales = []
    created = suspended = 0
    while suspended < incidents:
        suspended = count_of(client, "PAUSED")
        while created < incidents and created - suspended < LIMIT - 2 and time.time() < stop_launching:
            scales.append(PLAN_AFTER_SECONDS / (together - time.time()))
            start(f"w{created}", time_scale=scales[-1])
            created += 1
        if time.time() >= stop_launching and suspended >= created:
            break
        if time.time() > stop_launching + 60:
            raise RuntimeError(f"{created - suspended} incidents did not reach their wait; see {home}")
        time.sleep(0.5)
    all_waiting = time.time() - began
    log(f"{suspended} of {incidents} incidents waiting after {all_waiting:.0f} s (launched {created})")

    # 2. the tier's due time of each, from the wait's record
    due: dict[str, float] = {}
    for run in runs_of(client, "PAUSED"):
        who = read_json(client, run.id, who_key(run.state.state_details.run_input_keyset))
        due[str(run.id)] = datetime.fromisoformat(who["tiers"][0]["at"]).timestamp()
    first_due, last_due = min(due.values()), max(due.values())
    paged_early = len(endpoint.tier_pages())
    log(f"tiers due from {first_due - time.time():.0f} s to {last_due - time.time():.0f} s from now; "
        f"{paged_early} paged already")

    # 3. busy incidents: `LIMIT` hold every slot, the rest queue behind them
    for i in range(LIMIT + queued):
        start(f"b{i}", busy="yes")
    samples: list[tuple[float, int, int, int]] = []  # (time, held requests, runs awaiting a slot, other scheduled)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(3):
            try:
                samples.append((time.time(), endpoint.holding, count_of(client, "SCHEDULED", "AwaitingConcurrencySlot"),
                                count_of(client, "SCHEDULED")))
            except Exception as exc:  # noqa: BLE001 (a sample missed is reported as missing, not a failed bench)
                log(f"sample failed: {exc!r}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    # 4. every tier paged, or a minute past the last due time
    while time.time() < last_due + 60 and len(set(endpoint.tier_pages()) & set(due)) < len(due):
        time.sleep(1)
    ended = time.time()
    done.set()
    sampler.join(10)
    pages = endpoint.tier_pages()
    late = {rid: pages[rid][0] - at for rid, at in due.items() if rid in pages}
    twice = sum(1 for rid in due if len(pages.get(rid, [])) > 1)
    in_window = [s for s in samples if first_due <= s[0] <= ended]
    log(f"{len(late)} of {len(due)} tiers paged; lateness max {max(late.values(), default=float('nan')):.2f} s")

    # 5. `runbook pending`
    t0 = time.time()
    pending = pending_steps()
    pending_s = time.time() - t0
    listed = {p.flow_run_id for p in pending if p.runbook == RUNBOOK and p.step == "confirm"}
    still_waiting = {str(r.id) for r in runs_of(client, "PAUSED")}
    launcher.close()
    reader.__exit__(None, None, None)
    passes = watcher_passes(home / "watcher.log", first_due - 2, ended)
    values = list(late.values())
    return {
        "waiting": len(due), "launched": created, "all_waiting_s": round(all_waiting, 1), "time_scale_min": round(min(scales), 2),
        "time_scale_max": round(max(scales), 2),
        "due_spread_s": round(last_due - first_due, 1), "paged_before_busy": paged_early,
        "paged": len(late), "paged_twice": twice,
        "late_median_s": round(statistics.median(values), 2) if values else None,
        "late_p95_s": round(percentile(values, 95), 2) if values else None,
        "late_max_s": round(max(values), 2) if values else None,
        "within_10s": sum(1 for v in values if v <= 10),
        "busy_started": LIMIT + queued,
        "held_min": min((s[1] for s in in_window), default=None), "held_max": max((s[1] for s in in_window), default=None),
        "awaiting_slot_min": min((s[2] for s in in_window), default=None),
        "awaiting_slot_max": max((s[2] for s in in_window), default=None),
        "busy_ever_started": endpoint.held,
        "pending_listed": len(listed & set(due)), "pending_extra": len(listed - set(due)), "pending_s": round(pending_s, 2),
        "still_waiting": len(still_waiting & set(due)),
        "passes": len(passes), "pass_median_s": round(statistics.median(passes), 2) if passes else None,
        "pass_max_s": round(max(passes), 2) if passes else None,
    }


def markers(database: str) -> tuple[str, str]:
    """The SQLite section keeps its old markers; each other database has a section of its own."""
    return (BEGIN, END) if database == "SQLite" else (f"<!-- escalation-{database.lower()}:begin -->",
                                                      f"<!-- escalation-{database.lower()}:end -->")


def section(r: dict) -> str:
    begin, end = markers(r.get("database", "SQLite"))
    fewer = ("" if r["waiting"] >= r["target"] else
             f" **Only {r['waiting']} of the {r['target']} reached their wait before the first tier came due** "
             f"(launching stops {r['due_after_s'] - LEAD:g} s after the first start); the figures are for those.")
    return "\n".join([
        begin,
        f"## Escalation under a full concurrency limit, {r.get('database', 'SQLite')} (`python -m bench escalation`)",
        "",
        f"{r['waiting']} incidents of one runbook Suspended at a manual step with one escalation tier, on the served stack "
        "(`app.stack serve`, runs forked warm) and one escalation watcher (`app.stack watcher 1`: a pass every second, "
        "handing the runs with a tier due to 8 lanes that page them, and those due within 30 s to a thread that reads "
        "their waits' records ahead; the pass times below are the passes alone), "
        f"one temporary Prefect server on {r.get('database', 'SQLite')}. Once all wait, "
        f"{r['busy_started']} busy incidents of the same runbook (`concurrency_limit: {r['limit']}`) start: an action whose "
        "request the bench holds, so they keep every slot while the rest wait `AwaitingConcurrencySlot`. "
        "The tier is `after: 10m`; each incident's time scale (from "
        f"{show(r['time_scale_min'])} for the first started to {show(r['time_scale_max'])} for the last) makes it end "
        f"{show(r['due_after_s'])} s after the first start, so all tiers come due together, within "
        f"{show(r['due_spread_s'])} s (the spread of the waits' starts after their launch): the worst case for a pass, "
        "where incidents started over minutes would come due minutes apart. Lateness: the page's arrival "
        "at the webhook the duty manager's contact points at, minus the tier's due time in the wait's `who` record."
        + fewer,
        "",
        f"Machine: {r.get('machine')}; 1-minute load average {show(r.get('load_before'))} before and "
        f"{show(r.get('load_after'))} after (other test runs share it); the run took {show(r.get('seconds'))} s; all "
        f"{r['waiting']} waiting {show(r['all_waiting_s'])} s after the first start. Prefect has no timer on a paused run, "
        "so there is no bare-Prefect figure to put beside these.",
        "",
        "| | |",
        "|---|---|",
        f"| tiers paged | {r['paged']} of {r['waiting']} (paged twice: {r['paged_twice']}) |",
        f"| lateness, median / p95 / max | {show(r['late_median_s'])} / {show(r['late_p95_s'])} / **{show(r['late_max_s'])} s** |",
        f"| **paged within 10 s of due** | **{r['within_10s']} of {r['waiting']}** |",
        f"| while the tiers came due: busy incidents holding a slot (min / max) | {show(r['held_min'])} / {show(r['held_max'])} |",
        f"| ... incidents waiting `AwaitingConcurrencySlot` (min / max) | {show(r['awaiting_slot_min'])} / "
        f"{show(r['awaiting_slot_max'])} |",
        f"| watcher passes meanwhile: count, median / max | {r['passes']}, {show(r['pass_median_s'])} / "
        f"{show(r['pass_max_s'])} s |",
        f"| `runbook pending` (`pending_steps()`) lists | **{r['pending_listed']} of {r['waiting']}** "
        f"(in {show(r['pending_s'])} s; {r['still_waiting']} still Suspended) |",
        "",
        BEFORE,
        "",
        "Reproduce: `.venv/bin/python -m bench escalation` (starts and stops its own Prefect server, served runbook and "
        "watcher; rewrites this section). `--no-write` only prints; `python -m bench.escalation --incidents N --queued N --due-after S` changes the "
        "sizes; `--database postgresql+asyncpg://USER:PASSWORD@HOST/DB` puts the server on an empty PostgreSQL database "
        "(made as in docs/production.md section 2).",
        end,
    ])


def main(argv: list[str] | None = None) -> int:
    import prefect

    from bench import sections

    parser = argparse.ArgumentParser(prog="python -m bench escalation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=250)
    parser.add_argument("--queued", type=int, default=20, help="busy incidents beyond the concurrency limit")
    parser.add_argument("--due-after", type=float, default=330, help="real seconds from the first start to every tier")
    parser.add_argument("--database", help="the server's PREFECT_API_DATABASE_CONNECTION_URL (an empty PostgreSQL database); "
                                           "SQLite in the bench's folder if not given")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-escalation-"))
    load_before = os.getloadavg()[0]
    started = time.time()
    results = measure(tmp, args.incidents, args.queued, args.due_after, database=args.database)  # on failure the folder stays, with the logs
    shutil.rmtree(tmp, ignore_errors=True)
    results.update(seconds=round(time.time() - started), load_before=round(load_before, 1),
                   load_after=round(os.getloadavg()[0], 1),
                   machine=f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
                           f"{platform.python_version()}, Prefect {prefect.__version__}")
    print(json.dumps(results, indent=2))
    text = section(results)
    print(text)
    if not args.no_write:
        sections.write_section(text, *markers(results["database"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
