"""Where an alert's and an answer's time goes on the served stack: ``python -m bench trace [--no-write]``.

The stack of ``python -m bench quick`` (its runbook, contacts and endpoint; ``app.stack serve`` and
``app.stack intake`` on a temporary Prefect server on SQLite). Incidents one at a time: an alert POSTed,
its manual step answered the moment it waits (through the API the UI and the CLI use), until it closes.
For each, the server's own timestamps (the flow run's states, its task runs' starts) and the endpoint's
arrivals, relative to the alert and to the answer; the section shows the median of each milestone over
the samples, and the CPU seconds the server and the served runner (with its forkserver and runs) spent
per incident. About 2 minutes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench import quick

SAMPLES = 8
BEGIN, END = "<!-- trace:begin -->", "<!-- trace:end -->"


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def milestones(api: str, run_id: str) -> list[tuple[float, str]]:
    """The run's states and its task runs' starts, as the server stamped them, oldest first."""
    from tests.alerts.procs import rest

    states = rest("GET", f"{api}/flow_run_states/?flow_run_id={run_id}").json()
    tasks = rest("POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 50}).json()
    rows = [(_seconds(rest("GET", f"{api}/flow_runs/{run_id}").json()["created"]), "flow run created")]
    rows += [(_seconds(s["timestamp"]), f"state {s['name']}") for s in states]
    rows += [(_seconds(t["start_time"]), f"task run {t['name']} running") for t in tasks if t.get("start_time")]
    return sorted(rows)


def one_incident(api: str, intake: str, base_url: str, arrivals: quick.Arrivals, n: str) -> dict[str, float]:
    """Each milestone of one incident, seconds after the alert (first attempt) or the answer (the resumed one)."""
    from flows.answers import answer_step
    from tests.alerts.procs import wait_for

    began = time.time()
    httpx.post(f"{intake}/alerts/alertmanager", json=quick.alert(base_url, n), timeout=10).raise_for_status()
    run = wait_for(lambda: next((r for r in quick.paused_runs(api) if r["parameters"]["parameters"].get("n") == n), None),
                   60, f"incident {n} to wait", every=0.05)
    asked = time.time()
    assert answer_step(run["id"], by="chief", values={}).ok
    answered = time.time()
    arrivals.wait(f"/page/next/{n}")
    wait_for(lambda: quick._state(api, run["id"]) in ("COMPLETED", "FAILED", "CRASHED"), 60, f"incident {n} to close", every=0.2)
    rows = milestones(api, run["id"]) + [
        (arrivals.wait(f"/first/{n}"), "first action arrives"), (arrivals.wait(f"/page/first/{n}"), "first page arrives"),
        (answered, "answer call returned"), (arrivals.wait(f"/page/next/{n}"), "next page arrives")]
    out: dict[str, float] = {}
    seen: dict[str, int] = {}
    for moment, what in sorted(rows):
        part = "after the alert" if moment < asked else "after the answer"
        name = f"{part}: {what}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # a task run replayed by the resumed attempt is its own milestone
            name += f" ({seen[name]})"
        out[name] = moment - (began if moment < asked else asked)
    return out


def measure(home: Path, log=print, samples: int = SAMPLES) -> dict:
    merged: dict[str, list[float]] = {}
    with quick.served_stack(home, log) as s:
        one_incident(s.api, s.intake, s.base_url, s.arrivals, "warm-up")
        roots = {"server": s.server_pid, "serve": s.stack.procs["serve"].pid}
        cpu_before = quick.tree_cpu(roots)
        for i in range(samples):
            for name, moment in one_incident(s.api, s.intake, s.base_url, s.arrivals, f"t{i}").items():
                merged.setdefault(name, []).append(moment)
            time.sleep(1)
            log(f"sample {i} traced")
        cpu = {name: round((after - cpu_before[name]) / samples, 2) for name, after in quick.tree_cpu(roots).items()}
    order = sorted(merged, key=lambda k: (not k.startswith("after the alert"), statistics.median(merged[k])))
    return {"samples": samples, "milestones": {k: round(statistics.median(merged[k]), 3) for k in order
                                                if len(merged[k]) * 2 > samples},  # in most samples
            "cpu_seconds_per_incident": cpu}


def render(results: dict) -> str:
    lines = [BEGIN, "## Where the time goes (`python -m bench trace`)", "",
             "One incident of `quick-bench` at a time on the served stack (the stack of `bench quick`), its manual step",
             "answered the moment it waits; the server's own timestamps of the run's states and task runs, and the",
             f"endpoint's arrivals. Median over {results['samples']} incidents, seconds after the alert or after the answer.",
             f"Machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} when it ended.", "",
             "| milestone | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in results["milestones"].items()]
    cpu = results["cpu_seconds_per_incident"]
    lines += ["", "CPU seconds per incident (alert, wait, answer, close): "
              + ", ".join(f"{name} {value:g}" for name, value in cpu.items()) + ".", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench import sections

    argv = list(argv or [])
    tmp = tempfile.mkdtemp(prefix="bench-trace-")
    results = measure(Path(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    text = render(results)
    print(text)
    if "--no-write" not in argv:
        sections.write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
