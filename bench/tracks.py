"""What a waiting parallel step costs: ``python -m bench tracks [--no-write]`` (about 2 minutes on two cores).

A wait inside a parallel track cannot free its process: each track is a child flow run in a thread of the
incident's process, and Prefect cannot suspend a subflow, so the incident's process stays alive while its
tracks wait for people. This measures that process against bare Prefect's paused run, in the same run:

- one temporary Prefect server (SQLite); the served stack (``python -m app.stack serve``: runs forked warm from
  a preloaded forkserver) serving ``tracks-bench``, whose parallel step has two tracks that each wait for a
  person (a manual step); ``N`` incidents are started and left waiting, both tracks of each Paused;
- bare Prefect beside it: a plain flow served by ``prefect.serve`` (each run its own ``python -m prefect.engine``
  process) that calls ``pause_flow_run`` (blocking, in its process); ``N`` runs are left Paused.

Figures, once every run waits and again LATER s later (median over the N processes, and their sum): PSS (``/proc/<pid>/smaps_rollup``:
shared pages divided among the processes that share them, so forked children sharing the forkserver's pages
count their share), USS (pages of that process alone: what one more waiting incident adds) and RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from prefect import flow
from prefect.flow_runs import pause_flow_run

RUNBOOK = "tracks-bench"
N = 10
LATER = 30  # seconds between the two memory samples

TRACKS_RUNBOOK = """\
id: tracks-bench
title: {zh: 并行等待基准, en: Waiting tracks benchmark}
description: {zh: 两个并行分支各等一人, en: Two parallel tracks each waiting for a person}
source: {plan: 11, title: 基准}
concurrency_limit: 50
parameters:
  n: {type: string, label: {zh: 编号, en: Number}, default: "0"}
roles:
  chief-operator: {label: {zh: 主值, en: Chief operator}}
  deputy-operator: {label: {zh: 副值, en: Deputy operator}}
lead: chief-operator
steps:
  - id: both
    kind: parallel
    title: {zh: 两边同时, en: Both at once}
    tracks:
      - id: left
        title: {zh: 左, en: Left}
        steps:
          - id: confirm-left
            kind: manual
            title: {zh: 确认左, en: Confirm left}
            answerers: [chief-operator]
      - id: right
        title: {zh: 右, en: Right}
        steps:
          - id: confirm-right
            kind: manual
            title: {zh: 确认右, en: Confirm right}
            answerers: [deputy-operator]
"""


@flow(name="bare-pause")
def bare_pause() -> None:
    """Bare Prefect: a run that waits for a person, in its process."""
    pause_flow_run(timeout=3600)


SERVE_BARE = """
from prefect import serve
from prefect.deployments.runner import EntrypointType
from bench.tracks import bare_pause
serve(bare_pause.to_deployment(name="bare", entrypoint_type=EntrypointType.MODULE_PATH), limit=None,
      print_starting_message=False)
"""


def memory(pid: int) -> dict[str, float] | None:
    """PSS, USS (private pages) and RSS of one process, in MB; None when it is gone."""
    try:
        fields = {line.split(":")[0]: int(line.split()[1]) / 1024
                  for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]}
    except OSError:
        return None
    return {"pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"], "rss": fields["Rss"]}


def write_config(home: Path) -> dict[str, str]:
    runbooks = home / "runbooks"
    runbooks.mkdir()
    (runbooks / f"{RUNBOOK}.yaml").write_text(TRACKS_RUNBOOK, encoding="utf-8")
    (home / "contacts.yaml").write_text(textwrap.dedent("""\
        people:
          - {id: chief, name: Chief, roles: [chief-operator], channels: []}
          - {id: deputy, name: Deputy, roles: [deputy-operator], channels: []}
        """), encoding="utf-8")
    (home / "routes.yaml").write_text("routes: []\n", encoding="utf-8")
    return {"RUNBOOK_RUNBOOKS_DIR": str(runbooks), "RUNBOOK_CONTACTS_FILE": str(home / "contacts.yaml"),
            "RUNBOOK_ROUTES_FILE": str(home / "routes.yaml")}


def runs(api: str, **flt) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": flt, "limit": 200}, timeout=30)
    r.raise_for_status()
    return r.json()


def process_of(run: dict) -> int | None:
    from tests.alerts.procs import run_process

    return run_process(run["id"], run.get("infrastructure_pid"))


def figures(pids: list[int]) -> dict[str, float]:
    found = [m for m in map(memory, pids) if m]
    out = {"processes": len(found)}
    for key in ("pss", "uss", "rss"):
        values = [m[key] for m in found]
        out[f"{key}_median_mb"] = round(statistics.median(values), 1) if values else None
        out[f"{key}_total_mb"] = round(sum(values), 1)
    return out


def measure(home: Path, n: int = N, log=print) -> dict:
    from prefect.context import refresh_global_settings_context

    from bench.quick import Stack, tree_pss
    from bench.speed import child_env, start_server
    from tests.alerts.procs import stop_process, wait_for

    prefect_proc, api = start_server(home)
    env = {**child_env(home, api), **write_config(home), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("RUNBOOK_")})
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(home)})
    refresh_global_settings_context()
    stack = Stack(home, api, env)
    results: dict = {"n": n}
    try:
        stack.start("serve", ["-m", "app.stack", "serve"])
        stack.start("bare", ["-c", SERVE_BARE])

        def ready() -> bool:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {home / (name + '.log')}")
            try:
                return all(httpx.get(f"{api}/deployments/name/{d}", timeout=5).status_code == 200
                           for d in (f"{RUNBOOK}/runbook", "bare-pause/bare"))
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "the served stack and bare Prefect", every=0.5)
        log("stack ready")
        from flows.launch import start_incident
        from prefect.deployments import run_deployment

        began = time.time()
        incidents = [start_incident(RUNBOOK, {"n": str(i)}) for i in range(n)]
        bares = [run_deployment("bare-pause/bare", timeout=0) for _ in range(n)]
        ids = {str(r.id) for r in incidents}
        bare_ids = {str(r.id) for r in bares}

        shown = [began]

        def all_waiting() -> bool:
            paused = runs(api, state={"type": {"any_": ["PAUSED"]}})
            tracks = [r for r in paused if r.get("parent_task_run_id")]
            bare_paused = [r for r in paused if r["id"] in bare_ids]
            if time.time() >= shown[0] + 10:
                shown[0] = time.time()
                log(f"{time.time() - began:.0f} s: {len(tracks)} of {2 * n} tracks and {len(bare_paused)} of {n} bare runs paused")
            return len(tracks) >= 2 * n and len(bare_paused) >= n

        wait_for(all_waiting, 240, f"{n} incidents with both tracks paused and {n} bare runs paused", every=1)
        results["seconds_to_all_waiting"] = round(time.time() - began, 1)
        time.sleep(3)  # let the waits settle (first polls done)
        by_id = {r["id"]: r for r in runs(api, id={"any_": sorted(ids | bare_ids)})}
        ours = [p for p in (process_of(by_id[i]) for i in ids) if p]
        theirs = [p for p in (process_of(by_id[i]) for i in bare_ids) if p]
        results["runbook"] = figures(ours)
        results["bare"] = figures(theirs)
        results["runbook"]["states"] = sorted({by_id[i]["state"]["name"] for i in ids})
        results["bare"]["states"] = sorted({by_id[i]["state"]["name"] for i in bare_ids})
        # what holds them: the served runner (its forkserver and every run forked from it) against bare Prefect's
        # serve process (each run its own interpreter, children of it)
        stacks = tree_pss({"runbook": stack.procs["serve"].pid, "bare": stack.procs["bare"].pid})
        results["runbook"]["stack_pss_mb"] = round(stacks["runbook"], 1)
        results["bare"]["stack_pss_mb"] = round(stacks["bare"], 1)
        # a forked process's shared pages turn private as it runs (the collector touches every object): again, later
        time.sleep(LATER)
        for key, pids in (("runbook", ours), ("bare", theirs)):
            later = figures(pids)
            results[key].update({f"later_{k}": v for k, v in later.items() if k.endswith("median_mb")})
        log(json.dumps(results))
    finally:
        stack.stop()
        stop_process(prefect_proc, timeout=20)
    return results


BEGIN, END = "<!-- tracks:begin -->", "<!-- tracks:end -->"


def render(results: dict) -> str:
    ours, bare = results["runbook"], results["bare"]
    n = results["n"]

    def row(what: str, key: str) -> str:
        return f"| {what} | {ours.get(key)} | {bare.get(key)} |"

    return "\n".join([
        BEGIN, "## A waiting parallel step (`python -m bench tracks`)", "",
        f"{n} incidents of a runbook whose parallel step has two tracks, each waiting for a person (a manual step),",
        "on the served stack (runs forked warm); beside them, in the same run and on the same server, bare Prefect:",
        f"{n} runs of a plain flow served by `prefect.serve` that waits in `pause_flow_run` (blocking, in its process).",
        "A track is a child flow run in a thread of its incident's process and Prefect cannot suspend a subflow,",
        "so each incident keeps one process while its tracks wait (a wait outside a parallel step suspends and",
        "holds none). Memory from `/proc/<pid>/smaps_rollup` once every run waits; PSS shares the pages a",
        "process shares among its sharers, USS is the pages of that process alone (what one more adds).", "",
        f"Machine: {results.get('cpus')} CPUs; load average {results.get('load_average')} when it ended; the run took "
        f"{results.get('seconds')} s; all {n} + {n} waiting {results.get('seconds_to_all_waiting')} s after the first start.", "",
        "| per waiting incident (MB), once all wait | response-runbooks (2 tracks) | bare Prefect (1 paused run) |",
        "|---|---|---|",
        row("processes measured", "processes"),
        row("PSS, median", "pss_median_mb"), row("USS, median", "uss_median_mb"), row("RSS, median", "rss_median_mb"),
        row(f"PSS, median {LATER} s later", "later_pss_median_mb"), row(f"USS, median {LATER} s later", "later_uss_median_mb"),
        row(f"PSS, all {n}", "pss_total_mb"),
        row("PSS of the runner and everything under it", "stack_pss_mb"),
        "",
        "A forked incident starts out sharing most of its pages with the forkserver; they turn private as it runs",
        "(reference counts and the garbage collector write to the objects it inherited), so its USS grows over its",
        f"first {LATER} s of waiting and tends, over a long wait, to its RSS less the libraries that stay shared.",
        "The process holds whatever the tracks wait for (an hour's approval holds it an hour); what bounds how many:",
        "the runbook's `concurrency_limit` (a waiting incident keeps its slot), `RUNBOOK_SERVE_LIMIT` on the served",
        "stack, and a worker's `--limit` or its work pool's concurrency limit in production.", END])


def main(argv: list[str] | None = None) -> int:
    from bench import sections

    argv = list(argv or [])
    tmp = tempfile.mkdtemp(prefix="bench-tracks-")
    started = time.time()
    results = measure(Path(tmp))  # on failure the folder stays, with every part's log
    shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.time() - started, 1)
    results["load_average"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()
    print(json.dumps(results, indent=2))
    if "--no-write" not in argv:
        sections.write_section(render(results), BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
