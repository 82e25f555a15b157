"""The warm-start figures on a work pool worker: ``python -m bench worker [--no-write]`` (about 3 minutes on two cores).

bench/quick.py measures the served stack (`runbook up`); production runs incidents on workers
(docs/production.md section 3). This bench sets up that shape on one temporary Prefect server (SQLite, started
as `runbook up` starts it) and measures it next to bare Prefect's process worker in the same run:
- ours: a work pool `runbooks` of type `runbook`, the bench runbook of bench/quick.py (an HTTP action, a page, a
  manual step whose wait suspends the run, a page) deployed onto it as production deploys it (`python -m flows.deploy
  --output prefect.yaml`, then `prefect deploy --all`), run by `runbook worker --pool runbooks` (app/worker.py: runs
  forked warm, the pool polled as soon as the server's events say a run is scheduled), with the alert intake
  (``python -m app.stack intake``) starting incidents;
- bare Prefect: bench/quick.py's hand-written flow (its first task makes the same POST) deployed, in the same
  prefect.yaml, onto a work pool `bare` of type `process`, run by `prefect worker start --pool bare --type process`.
Both workers poll with PREFECT_WORKER_QUERY_SECONDS=2 (Prefect's default is 10) and send heartbeats every 30 s
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY, as `runbook up` sets it). A local endpoint stands in for the systems an action
calls and for the pager (a webhook channel).

Figures (the JSON keys), taken by bench/quick.py's own functions, one sample at a time after a warm-up, 10 samples:
- ``alert_to_first_action_p50_s`` / ``_p95_s``: an Alertmanager-format alert POSTed to the intake -> the endpoint
  receives the runbook's first action; ``bare_prefect_first_task_p50_s`` / ``_p95_s``: ``run_deployment(timeout=0)``
  -> the bare flow's first task's POST arrives.
- ``first_page_p50_s`` / ``_p95_s``: the same alert -> its first page delivered to the webhook.
- ``answer_to_next_page_p50_s`` / ``_p95_s``: the suspended manual step answered through the API the UI and the CLI
  use -> the next page delivered (a resume: the worker starts the run again, forked warm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench import sections
from bench.sections import figure_rows, show
from bench.quick import ROOT, TARGETS, Arrivals, Stack, bare, endpoint, latencies, write_config

POOL = "runbooks"  # the pool flows/deploy.py puts every runbook on
BARE_POOL = "bare"
QUERY_SECONDS = "2"
HEARTBEAT_SECONDS = "30"
RUNBOOK_CLI = str(Path(sys.executable).parent / "runbook")
PREFECT_CLI = str(Path(sys.executable).parent / "prefect")


def run(argv: list[str], env: dict[str, str], home: Path) -> None:
    """A command as an operator types it, from the checkout (where `prefect deploy` records its working directory)."""
    done = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (the run's folder {home} keeps every log):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def prefect_file(home: Path, env: dict[str, str]) -> Path:
    """The prefect.yaml production deploys, generated from the bench's runbook, with bare Prefect's flow added on its
    own process pool: one `prefect deploy --all` puts both on the server the way docs/production.md does."""
    target = home / "prefect.yaml"
    run([sys.executable, "-m", "flows.deploy", "--output", str(target)], env, home)
    config = yaml.safe_load(target.read_text(encoding="utf-8"))
    config["deployments"].append({"name": "bare", "entrypoint": "bench/quick.py:bare_incident",
                                  "work_pool": {"name": BARE_POOL}})
    target.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=200), encoding="utf-8")
    return target


def use_server(env: dict[str, str], api: str, home: Path) -> None:
    """This process answers steps and starts bare runs: point it at the bench's server, contacts and runbooks."""
    from prefect.context import refresh_global_settings_context

    from runbooks.settings import get_settings

    os.environ.update({k: v for k, v in env.items() if k.startswith("RUNBOOK_")})
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(home)})
    get_settings.cache_clear()
    refresh_global_settings_context()


def ready(stack: Stack, api: str, intake: str) -> bool:
    """Every part alive, the intake answering, both deployments there and both pools READY (a worker has polled)."""
    for name, proc in stack.procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {stack.home / (name + '.log')}")
    try:
        if httpx.get(f"{intake}/healthz", timeout=2).status_code != 200:
            return False
        for deployment in ("quick-bench/runbook", "bare-incident/bare"):
            if httpx.get(f"{api}/deployments/name/{deployment}", timeout=5).status_code != 200:
                return False
        return all(httpx.get(f"{api}/work_pools/{pool}", timeout=5).json().get("status") == "READY"
                   for pool in (POOL, BARE_POOL))
    except (httpx.HTTPError, ValueError):
        return False


def measure(home: Path, log=print) -> dict:
    """Set the worker shape up, take both sides' samples, stop everything (the folder keeps every part's log)."""
    from bench.speed import child_env, start_server
    from tests.alerts.procs import free_port, stop_process, wait_for

    arrivals = Arrivals()
    server = endpoint(arrivals)
    base_url = f"http://127.0.0.1:{server.server_port}"
    prefect_proc, api = start_server(home)
    env = {**child_env(home, api), **write_config(home, base_url), "RUNBOOK_WEBHOOK_TIMEOUT": "10",
           "PREFECT_WORKER_QUERY_SECONDS": QUERY_SECONDS, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT_SECONDS,
           "PREFECT_CLI_PROMPT": "false"}
    use_server(env, api, home)
    stack = Stack(home, api, env)
    intake = f"http://127.0.0.1:{free_port()}"
    results: dict = {}
    try:
        log("server up; creating the pools")
        run([PREFECT_CLI, "work-pool", "create", POOL, "--type", "runbook"], env, home)
        run([PREFECT_CLI, "work-pool", "create", BARE_POOL, "--type", "process"], env, home)
        stack.start("worker", [RUNBOOK_CLI, "worker", "--pool", POOL])
        stack.start("bare-worker", ["-m", "prefect", "worker", "start", "--pool", BARE_POOL, "--type", "process"])
        stack.start("intake", ["-m", "app.stack", "intake", "127.0.0.1", intake.rsplit(":", 1)[1]])
        run([PREFECT_CLI, "deploy", "--all", "--prefect-file", str(prefect_file(home, env))], env, home)
        wait_for(lambda: ready(stack, api, intake), 180, "the workers, the intake and the deployments", every=0.5)
        log("workers ready")
        results.update(latencies(api, intake, base_url, arrivals, log))
        results.update(bare(api, base_url, arrivals, log))
    finally:
        stack.stop()
        stop_process(prefect_proc, timeout=20)
        server.shutdown()
    return results


BEGIN, END = "<!-- worker:begin -->", "<!-- worker:end -->"
AFTER = "<!-- tracks:begin -->"  # a new section goes before this one: right after the warm-start section's notes

# bench/quick.py's rows for the figures a worker has (the drain, the burst and the per-step figure are the stack's)
ROWS = [row for row in TARGETS if row[1].startswith(("alert_to_first_action", "first_page", "answer_to_next_page"))]


def render(results: dict) -> str:
    lines = [BEGIN, "## Warm start on a work pool worker (`python -m bench worker`)", "",
             "The same figures as above, in production's shape (docs/production.md section 3): the bench runbook deployed",
             "by `prefect deploy --all` from the prefect.yaml `python -m flows.deploy` generates, onto a work pool of type",
             "`runbook`, run by `runbook worker` (runs forked warm), incidents started by the alert intake; next to it, in",
             "the same run, bare Prefect: a hand-written flow on a `process` pool run by `prefect worker start --type process`",
             f"(`run_deployment` to its first task's POST). One temporary Prefect server on SQLite; both workers poll every "
             f"{results.get('query_seconds')} s",
             "(`PREFECT_WORKER_QUERY_SECONDS`; Prefect's default is 10) with heartbeats every 30 s; the runbook worker also",
             "polls as soon as the server's events say a run of its pool is scheduled (app/worker.py), and forks the run",
             "where the process worker starts a new interpreter. How each figure is taken: the docstring of `bench/worker.py`.", "",
             f"Machine: {results.get('cpus')} CPUs; load average {show(results.get('load_average'))} when it ended; "
             f"the run took {show(results.get('seconds'))} s; {results.get('samples')} samples a side after a warm-up.", "",
             "| figure | response-runbooks (runbook worker) | bare Prefect (process worker) | target |", "|---|---|---|---|"]
    return "\n".join(lines + figure_rows(results, ROWS) + [END])


def main(argv: list[str] | None = None) -> int:
    from bench.quick import SAMPLES

    argv = list(argv or [])
    started = time.time()
    log = lambda *a: print(f"[{time.time() - started:5.0f} s]", *a, file=sys.stderr, flush=True)  # noqa: E731
    home = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    results = measure(home, log)  # on failure the folder stays, with every part's log
    shutil.rmtree(home, ignore_errors=True)
    results.update({"seconds": round(time.time() - started, 1), "load_average": round(os.getloadavg()[0], 2),
                    "cpus": os.cpu_count(), "query_seconds": float(QUERY_SECONDS), "samples": SAMPLES})
    print(json.dumps(results))
    if "--no-write" not in argv and "--json" not in argv:  # as bench quick: --json only prints
        sections.write_section(render(results), BEGIN, END, before=AFTER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
