"""`python -m bench`: every benchmark, each rewriting its own section of docs/BENCHMARKS.md (`--no-write`: print only)."""

from __future__ import annotations

import sys

from bench import alerts, speed

if __name__ == "__main__":
    flags = ["--no-write"] if "--no-write" in sys.argv[1:] else []
    status = speed.main(flags)
    status = alerts.main(flags) or status
    raise SystemExit(status)
