"""`python -m bench [NAME...]`: every benchmark, or the ones named (speed, alerts, fuzz, watcher, quick, worker, burst, trace, tracks,
escalation), each rewriting its own section of docs/BENCHMARKS.md (`--no-write`: print only). `python -m bench quick --json` prints
the warm-start figures as one JSON object (about 4 minutes) and writes nothing. quick, worker (the same figures on a work pool
worker) and burst (a burst of incidents next to bare Prefect's) run only when named."""

from __future__ import annotations

import sys

from bench import alerts, burst, escalation, fuzz, quick, speed, trace, tracks, watcher, worker

BENCHES = {"speed": speed.main, "alerts": alerts.main, "fuzz": fuzz.main, "watcher": watcher.main, "quick": quick.main,
           "trace": trace.main, "tracks": tracks.main, "escalation": escalation.main, "worker": worker.main, "burst": burst.main}

if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a in ("--no-write", "--json")]
    if "--size" in sys.argv:  # burst's: the number after it is not a benchmark's name
        at = sys.argv.index("--size")
        flags += sys.argv[at:at + 2]
        del sys.argv[at:at + 2]
    names = [a for a in sys.argv[1:] if not a.startswith("-")] or [n for n in BENCHES if n not in ("quick", "worker", "burst")]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"no benchmark {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    status = 0
    for name in names:
        status = BENCHES[name](flags) or status
    raise SystemExit(status)
