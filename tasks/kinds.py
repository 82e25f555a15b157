"""How every step kind runs: one module per kind, each registering itself with `tasks.steps.runs`.

Importing this module fills `HANDLERS`; it refuses to load when a kind of the
language has no module, so a new kind cannot be half added.
"""

from __future__ import annotations

from runbooks.model import KINDS
from tasks import action, approval, branch, check, end, grade, manual, notify, parallel, repeat, report, wait  # noqa: F401 (they register)
from tasks.steps import BESIDE, HANDLERS

_missing = (set(KINDS) - set(HANDLERS)) | {kind for kind, cls in KINDS.items() if cls.in_time_rules and kind not in BESIDE}
if _missing:
    raise ImportError(f"step kinds without (all of) their module in tasks/: {', '.join(sorted(_missing))}")
