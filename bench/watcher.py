"""The escalation watcher's pass over many waiting incidents.

N flow runs (default 1,000) are put in Prefect's Suspended state as a suspended wait
leaves them, each with its `who` record (escalation tiers, expiry, time rules, none due
yet); then one watcher pass (`flows.escalation.wake_due` + `flows.recovery.heal_crashed`) is timed, next
to bare Prefect reading the same runs page by page (what any pass must at least do).

The results go to the "Escalation watcher" section of docs/BENCHMARKS.md, between
``<!-- watcher:begin -->`` and ``<!-- watcher:end -->`` (``--no-write`` only prints them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.sections import write_section
from bench.speed import start_server

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- watcher:begin -->", "<!-- watcher:end -->"


def populate(client, n: int) -> None:
    """N runs of one flow, each Suspended at a wait with its record, as tasks/people.py leaves them."""
    from prefect import flow
    from prefect.input.run_input import keyset_from_paused_state
    from prefect.states import Paused

    from tasks.inputs import next_due_message

    @flow(name="bench-waiting")
    def waiting():
        pass

    later = datetime.now(timezone.utc) + timedelta(hours=6)
    timers = [{"what": "tier 1", "at": later.isoformat()}, {"what": "expiry", "at": (later + timedelta(hours=1)).isoformat()},
              {"what": "threshold t", "at": later.isoformat(), "claim": "threshold-t"}]
    for i in range(n):
        run = client.create_flow_run(waiting, tags=["runbook:bench-waiting"])
        state = Paused(timeout_seconds=None, reschedule=True, pause_key=f"confirm-{i}", name="Suspended",
                       message=next_due_message(timers))
        keyset = keyset_from_paused_state(state)
        state.state_details.run_input_keyset = keyset
        client.set_flow_run_state(run.id, state, force=True)
        who = {"runbook": "bench-waiting", "step": "confirm", "kind": "manual", "may_answer": [], "paged": [],
               "waiting_since": datetime.now(timezone.utc).isoformat(), "wait_key": f"confirm-{i}",
               "tiers": [{"at": later.isoformat(), "roles": ["dispatch"], "text": "page", "plan_seconds": 600}],
               "expires_at": (later + timedelta(hours=1)).isoformat(),
               "timers": timers}
        client.create_flow_run_input(run.id, key=keyset["response"].removesuffix("-response") + "-who", value=json.dumps(who))


def measure(n: int, passes: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-watcher-"))
    proc, api = start_server(home)
    try:
        os.environ.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
        from flows.server import use_server

        use_server(api)
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType

        from flows.escalation import wake_due
        from flows.recovery import heal_crashed, runs_in

        with get_client(sync_client=True) as client:
            started = time.monotonic()
            populate(client, n)
            setup = time.monotonic() - started
            bare, ours = [], []
            for _ in range(passes):
                t0 = time.monotonic()
                read = runs_in(client, StateType.PAUSED)
                bare.append(time.monotonic() - t0)
                t0 = time.monotonic()
                woken = wake_due(client) + heal_crashed(client)
                ours.append(time.monotonic() - t0)
            assert len(read) == n and woken == [], (len(read), woken)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(home, ignore_errors=True)
    return {"waiting": n, "passes": passes, "setup_s": round(setup, 1),
            "watcher_pass_median_s": round(statistics.median(ours), 2), "watcher_pass_max_s": round(max(ours), 2),
            "bare_read_median_s": round(statistics.median(bare), 2)}


def section(r: dict) -> str:
    return "\n".join([
        BEGIN,
        "## Escalation watcher: one pass over many waiting incidents",
        "",
        f"{r['waiting']} incidents Suspended at a wait, each with its `who` record (tiers, expiry, a time rule; none due) "
        "and its first due time in the state's message, as tasks/people.py leaves them, "
        f"on a local Prefect server (SQLite), this {os.cpu_count()}-CPU machine ({platform.machine()}, Python "
        f"{platform.python_version()}); {r['passes']} passes.",
        "",
        "| | median | max |",
        "|---|---|---|",
        f"| watcher pass (`wake_due` + `heal_crashed`: every waiting run, its record, the crashed ones) | "
        f"{r['watcher_pass_median_s']} s | {r['watcher_pass_max_s']} s |",
        f"| bare Prefect: read the same runs page by page (`read_flow_runs`, 200 a page) | {r['bare_read_median_s']} s | |",
        "",
        "Target: one pass over 1,000 waiting incidents under 5 s. Reproduce: `.venv/bin/python -m bench watcher` "
        "(starts and stops its own Prefect server; `--waiting`, `--passes`).",
        END,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.waiting, args.passes)
    text = section(result)
    print(text)
    if not args.no_write:
        write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
