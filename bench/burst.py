"""A storm's incidents all at once, next to bare Prefect: ``python -m bench burst [--size N] [--no-write]``.

`bench quick` watches 200 alerts of 200 groups reach their first wait on the served stack (the target: 60 s on
this two-core machine). This bench puts such a burst next to bare Prefect's in the same run, at a size both can
take here (default 50: bare Prefect starts a new interpreter for each run, and 200 at once would want some 20 GB):
- ours: N alerts of N groups POSTed at once to the intake of the served stack (bench/quick.py's runbook: an action,
  a page, a manual step whose wait suspends the run) -> all N incidents Suspended at their manual step;
- bare Prefect: N ``run_deployment(timeout=0)`` of a hand-written flow served by ``prefect.serve`` (no limit, as
  the served stack has none), whose first task makes the same POST and which then suspends
  (``suspend_flow_run``) -> all N Suspended.
One temporary Prefect server on SQLite, started as `runbook up` starts it; ours first, then bare Prefect's. For
each: the seconds until all wait (or how many wait when the watch ends), the CPU seconds of the server and of that
side's runner (with the processes it started) meanwhile, and their peak memory (PSS).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from prefect import flow
from prefect.flow_runs import suspend_flow_run

from bench import quick, sections
from bench.quick import bare_first

SIZE = 50
WATCH_SECONDS = 300
BEGIN, END = "<!-- burst:begin -->", "<!-- burst:end -->"
AFTER = "<!-- worker:begin -->"  # the section goes right after the warm-start section and its notes


@flow(name="bare-wait")
def bare_wait(base_url: str, n: str) -> None:
    """Bare Prefect: the runbook's first action, then a wait for a person that suspends the run, written by hand."""
    bare_first(base_url, n)
    suspend_flow_run(timeout=3600)


SERVE_BARE_WAIT = quick.serve_bare("bench.burst", "bare_wait")


def measure(home: Path, size: int, log=print) -> dict:
    from prefect.deployments import run_deployment

    from tests.alerts.procs import wait_for

    results: dict = {"size": size}
    with quick.served_stack(home, log) as s:
        s.stack.start("bare-wait", ["-c", SERVE_BARE_WAIT])
        wait_for(lambda: httpx.get(f"{s.api}/deployments/name/bare-wait/bare", timeout=5).status_code == 200, 120,
                 "bare Prefect's served flow", every=0.5)
        server = {"server": s.server_pid}

        def bare() -> None:
            for i in range(size):
                run_deployment("bare-wait/bare", parameters={"base_url": s.base_url, "n": f"burst{i}"}, timeout=0)

        log("ours:")
        results["ours"] = quick.watch(lambda: quick.post_burst(s.intake, s.base_url, size), lambda: quick.paused_count(s.api), size,
                                      {**server, "serve": s.stack.procs["serve"].pid, "intake": s.stack.procs["intake"].pid},
                                      log, WATCH_SECONDS)
        log("bare Prefect:")
        results["bare"] = quick.watch(bare, lambda: quick.paused_count(s.api, "bare-wait"), size,
                                      {**server, "bare": s.stack.procs["bare-wait"].pid}, log, WATCH_SECONDS)
    return results


def render(results: dict) -> str:
    ours, bare = results["ours"], results["bare"]

    def all_wait(side: dict) -> str:
        return f"{side['seconds']} s" if side["seconds"] is not None else f"{side['waiting']} of {results['size']} after {WATCH_SECONDS} s"

    def server_share(side: dict) -> str:
        return f"{side['cpu_seconds']['server'] / results['size']:.2f}"

    def cpu(side: dict) -> str:
        return ", ".join(f"{name} {value:g}" for name, value in side["cpu_seconds"].items())

    lines = [BEGIN, f"## A burst of {results['size']} incidents, next to bare Prefect (`python -m bench burst`)", "",
             f"{results['size']} incidents started at once on one temporary Prefect server (SQLite, as `runbook up` starts it),",
             "each to its first wait for a person, suspended: ours from as many alerts of as many groups POSTed to the",
             "intake of the served stack (bench/quick.py's runbook); bare Prefect's from as many `run_deployment` of a",
             "hand-written flow served by `prefect.serve` (no limit) that makes the same POST and then calls",
             "`suspend_flow_run`. Ours first, then bare Prefect's, in the same run. How: the docstring of `bench/burst.py`.", "",
             f"Machine: {os.cpu_count()} CPUs; load average {results['load_average']:.2f} when it ended; "
             f"the run took {results['took']:.0f} s.", "",
             "| | response-runbooks | bare Prefect |", "|---|---|---|",
             f"| all {results['size']} waiting | {all_wait(ours)} | {all_wait(bare)} |",
             f"| CPU seconds meanwhile | {cpu(ours)} | {cpu(bare)} |",
             f"| peak memory (MB, PSS) | {ours['peak_memory_mb']} | {bare['peak_memory_mb']} |",
             f"| the Prefect server's CPU seconds per incident | {server_share(ours)} | {server_share(bare)} |", "",
             "What bounds a burst on this machine is the last row: the Prefect server's own work for each run that",
             "starts and suspends (its requests, states and events), about the same for a runbook as for a flow written",
             "by hand. At that cost, the 200 incidents of `bench quick` above ask the server alone for more CPU seconds",
             "than two cores give in 60 s, before any run's own; bare Prefect at that size would also start 200",
             "interpreters at once.", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    size = int(argv[argv.index("--size") + 1]) if "--size" in argv else SIZE
    started = time.time()
    log = lambda *a: print(f"[{time.time() - started:5.0f} s]", *a, file=sys.stderr, flush=True)  # noqa: E731
    home = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    results = measure(home, size, log)  # on failure the folder stays, with every part's log
    shutil.rmtree(home, ignore_errors=True)
    results.update({"took": time.time() - started, "load_average": os.getloadavg()[0]})
    print(json.dumps(results))
    if "--no-write" not in argv:
        sections.write_section(render(results), BEGIN, END, before=AFTER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
