"""`python -m bench [NAME...]`: every benchmark, or the ones named (speed, alerts, fuzz, watcher), each rewriting its own
section of docs/BENCHMARKS.md (`--no-write`: print only)."""

from __future__ import annotations

import sys

from bench import alerts, fuzz, speed, watcher

BENCHES = {"speed": speed.main, "alerts": alerts.main, "fuzz": fuzz.main, "watcher": watcher.main}

if __name__ == "__main__":
    flags = ["--no-write"] if "--no-write" in sys.argv[1:] else []
    names = [a for a in sys.argv[1:] if not a.startswith("-")] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"no benchmark {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    status = 0
    for name in names:
        status = BENCHES[name](flags) or status
    raise SystemExit(status)
