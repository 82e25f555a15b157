"""The small YAML files every incident reads when it starts (contacts, site), read fast.

Parsed by libyaml when PyYAML has it (ten times the pure-Python parser), and built once per
version of the file: a changed file (its modification time or size) is read again, so who is on
call today is always the file's, without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_built: dict[tuple[Path, Callable], tuple[tuple[int, int], Any]] = {}


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 (a safe loader)


def load_cached(path: Path, build: Callable[[Any], T], missing: Callable[[], T]) -> T:
    """`build(parsed file)`, reused until the file changes; `missing()` when there is no file. Treat the result as read-only."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return missing()
    version = (stat.st_mtime_ns, stat.st_size)
    key = (path.resolve(), build)
    hit = _built.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    value = build(read_yaml(path.read_text(encoding="utf-8")) or {})
    _built[key] = (version, value)
    return value
