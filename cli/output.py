"""How the `runbook` command prints: tables that never cut an id, JSON for scripts, spans as people say them.

People copy run ids and runbook ids out of these tables into the next command, so an
id column is never wrapped or shortened; titles and lists wrap instead. When even
that does not fit the terminal (or the 80 columns a pipe gets), each row is printed
as a block of `header: value` lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from runbooks.durations import human

console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages hold ids: never broken into lines

TABLE_EDGE = 4  # the left border and padding, the right border
COLUMN_EDGE = 3  # a separator and the padding either side


@dataclass
class Col:
    header: str
    whole: bool = False  # an id: never wrapped or cut


FOLDED_MIN = 8  # a long word in a wrapping column (a hyphenated title, a Chinese title) folds down to this


def _widest(text: str, whole: bool) -> int:
    """The narrowest a cell can get: its longest line when whole, else its longest word, folded if long."""
    if whole:
        return max((cell_len(line) for line in text.splitlines()), default=0)
    return min(FOLDED_MIN, max((cell_len(word) for word in text.split()), default=0))


def print_table(cols: Sequence[Col], rows: Sequence[Sequence[str]], *, out: Console | None = None) -> None:
    out = out or console
    needed = TABLE_EDGE - COLUMN_EDGE + sum(
        COLUMN_EDGE + max([_widest(c.header, False)] + [_widest(row[i], c.whole) for row in rows]) for i, c in enumerate(cols))
    if needed > out.width:
        for row in rows:
            for col, cell in zip(cols, row):
                out.print(f"{col.header}: " + escape(cell.replace("\n", " · ")), soft_wrap=True)
            out.print()
        return
    table = Table(*[Column(c.header, no_wrap=True, min_width=max([_widest(r[i], True) for r in rows], default=0)) if c.whole
                    else Column(c.header, overflow="fold") for i, c in enumerate(cols)])
    for row in rows:
        table.add_row(*[escape(cell) for cell in row])
    out.print(table)


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else (messages go to stderr)."""
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def elapsed(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago, as people say it: '45 s', '10 min', '2 h 5 min', '3 d 4 h' (rounded to what matters)."""
    if since is None:
        return ""
    return span((now or datetime.now(timezone.utc)) - since)


def span(value: Any) -> str:
    """A duration (timedelta or seconds) rounded to what matters: seconds under a minute, minutes under two days."""
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    seconds = max(0.0, seconds)
    if seconds < 60:
        return human(round(seconds))
    if seconds < 2 * 86400:
        return human(round(seconds / 60) * 60)
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
