"""Load runbook YAML files and explain what is wrong with them.

Every error names the file, the step and the fix, because the person reading it
is editing a plan, not debugging Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from runbooks.model import STEP_KINDS, Runbook, RunbookProblem, _roles_of, step_kind
from runbooks.yamlfile import read_yaml


class Directory(Protocol):
    """Who holds which role: the contacts directory (integrations/contacts.py) or anything that answers the same."""

    def roles(self) -> set[str]: ...


@dataclass
class LoadError:
    file: str
    step: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}" + (f", step '{self.step}'" if self.step else "")
        return f"{where}: {self.message}\n    fix: {self.fix}"


class RunbookError(Exception):
    def __init__(self, errors: list[LoadError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def runbook_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))


def load_file(path: Path, directory: Directory | None = None) -> Runbook:
    """Load and fully validate one runbook; raise RunbookError with every problem found."""
    name = str(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))  # libyaml: a tenth of the pure-Python parser's time
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RunbookError([LoadError(name, None, f"is not valid YAML{line}: {getattr(exc, 'problem', exc)}", "fix the indentation or quoting there")]) from None
    if not isinstance(raw, dict):
        raise RunbookError([LoadError(name, None, "does not hold a runbook mapping", "start the file with `id:`, `title:`, `steps:` ...")])
    try:
        runbook = Runbook.model_validate(raw)
    except ValidationError as exc:
        raise RunbookError(_explain(name, raw, exc)) from None
    if path.stem != runbook.id:
        raise RunbookError([LoadError(name, None, f"holds runbook '{runbook.id}' but the file is named '{path.name}'", f"rename the file to {runbook.id}.yaml")])
    if directory is not None:
        errors = check_contacts(name, runbook, directory)
        if errors:
            raise RunbookError(errors)
    return runbook


_current: dict[Path, tuple[tuple[int, int], Runbook]] = {}


def load_current(path: Path) -> Runbook:
    """load_file, reused until the file changes (its modification time or size), for a process that needs the same
    runbook again and again: the watcher pages each due tier from it, 250 at once in a storm. Treat it as read-only."""
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    hit = _current.get(path)
    if hit is None or hit[0] != version:
        hit = _current[path] = (version, load_file(path))
    return hit[1]


def check_contacts(name: str, runbook: Runbook, directory: Directory) -> list[LoadError]:
    """Every role the runbook addresses must reach at least one person."""
    known = directory.roles()
    errors = []
    for role in runbook.roles:
        if role not in known:
            users = [s.id for s, _ in runbook.all_steps() if role in _roles_of(s)] or ["(lead)" if role == runbook.lead else "(declared only)"]
            errors.append(LoadError(name, users[0] if users[0][0] != "(" else None,
                                    f"role '{role}' has no person in the contacts directory",
                                    f"add `{role}` to the roles of someone in the contacts file"))
    return errors


def _explain(name: str, raw: dict, exc: ValidationError) -> list[LoadError]:
    errors: list[LoadError] = []
    for err in exc.errors(include_url=False):
        original = (err.get("ctx") or {}).get("error")
        step = _step_at(raw, err["loc"])
        if isinstance(original, RunbookProblem):
            errors.append(LoadError(name, original.step or step, original.message, original.fix))
            continue
        loc = ".".join(str(p) for p in err["loc"] if not _is_kind_tag(p))
        message, fix = _message_and_fix(err, loc)
        errors.append(LoadError(name, step, message, fix))
    return _unique(errors)


KIND_NAMES = [step_kind(k) for k in STEP_KINDS]


def _is_kind_tag(part: Any) -> bool:
    return isinstance(part, str) and part in KIND_NAMES


def _step_at(raw: Any, loc: tuple) -> str | None:
    """Walk the raw YAML along an error location and return the innermost step id passed."""
    node, step = raw, None
    for part in loc:
        if isinstance(node, dict) and "kind" in node and isinstance(node.get("id"), str):
            step = node["id"]
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif _is_kind_tag(part):
            continue
        else:
            break
    if isinstance(node, dict) and "kind" in node and isinstance(node.get("id"), str):
        step = node["id"]
    return step


def _message_and_fix(err: dict, loc: str) -> tuple[str, str]:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return f"`{loc}` is missing", f"add `{loc.split('.')[-1]}:` to it"
    if kind == "extra_forbidden":
        return f"`{loc}` is not a known field", f"remove `{loc.split('.')[-1]}` or check its spelling"
    if kind == "union_tag_invalid":
        tags = err.get("ctx", {}).get("expected_tags", "")
        return f"`{loc}` has an unknown kind", f"use one of the step kinds: {tags}"
    if kind == "union_tag_not_found":
        return f"`{loc}` has no `kind`", f"add `kind:` ({', '.join(KIND_NAMES)})"
    if kind == "string_pattern_mismatch":
        return f"`{loc}` has characters that are not allowed", "use lowercase letters, digits and dashes (underscores in form field ids)"
    if kind == "literal_error":
        return f"`{loc}`: {msg}", "pick one of the listed values"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        problem, _, advice = text.partition("; ")
        return f"`{loc}`: {problem}", advice or "correct the value as the message says"
    return f"`{loc}`: {msg}", "correct the value to the expected type"


def _unique(errors: list[LoadError]) -> list[LoadError]:
    seen, out = set(), []
    for e in errors:
        key = (e.step, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def load_all(folder: Path, directory: Directory | None = None) -> tuple[dict[str, Runbook], list[LoadError]]:
    """Load every runbook in a folder; return the good ones and every error of the bad ones."""
    runbooks: dict[str, Runbook] = {}
    errors: list[LoadError] = []
    for path in runbook_files(folder):
        try:
            rb = load_file(path, directory)
        except RunbookError as exc:
            errors += exc.errors
            continue
        if rb.id in runbooks:
            errors.append(LoadError(str(path), None, f"runbook id '{rb.id}' is used by another file", "give each runbook its own id"))
            continue
        runbooks[rb.id] = rb
    return runbooks, errors
