"""Each benchmark rewrites its own section of docs/BENCHMARKS.md, between its begin and end markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def write_section(text: str, begin: str, end: str, path: Path = BENCHMARKS, before: str | None = None) -> None:
    """Replace the text between `begin` and `end` (markers included in `text`). When it is not there yet, it goes in
    just before the text `before` (another section's begin marker), or at the end."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        updated = head + text + rest.split(end, 1)[1]
    elif before is not None and before in current:
        updated = current.replace(before, f"{text}\n\n{before}", 1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(updated, encoding="utf-8")


def show(value) -> str:
    """A figure as a section shows it: a dash when it was not measured."""
    return "—" if value is None else (f"{value:g}" if isinstance(value, (int, float)) else str(value))


def figure_rows(results: dict, rows: list[tuple[str, str, str | None, str]]) -> list[str]:
    """`| what | ours | bare Prefect's | target |` for each (what, our key, bare Prefect's key or None, target)."""
    return [f"| {what} | {show(results.get(ours))} | {show(results.get(bare)) if bare else ''} | {target} |"
            for what, ours, bare, target in rows]
