"""Each benchmark rewrites its own section of docs/BENCHMARKS.md, between its begin and end markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def write_section(text: str, begin: str, end: str, path: Path = BENCHMARKS) -> None:
    """Replace the text between `begin` and `end` (markers included in `text`); append it when it is not there yet."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        updated = head + text + rest.split(end, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(updated, encoding="utf-8")
