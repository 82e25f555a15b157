"""The shape of the code, kept: layers that point one way, no cycles, every step kind whole, small files.

Counted over every import statement, also those inside functions (grimp, under
import-linter, sees them all; the cycle and in-function checks here read the AST).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from runbooks.checklist import checklist
from runbooks.model import KINDS, Runbook, StepBase
from tasks.kinds import BESIDE, HANDLERS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "cli", "flows", "tasks", "integrations", "runbooks")
MAX_LINES = 400
MAX_IN_FUNCTION_IMPORTS = 12


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path, name: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported project module, statement, inside a function) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                targets = [f"{child.module}.{a.name}" for a in child.names] + [child.module]
            for target in targets:
                while target and target not in MODULES:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append((target, child, in_function))
                    break
            visit(child, inner)

    visit(tree, False)
    return found


def test_the_layers_hold():
    """`lint-imports` with the contracts in pyproject.toml: runbooks < integrations < tasks < flows < app < cli."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_no_cycle_between_files():
    graph = {name: {target for target, _, _ in _imports(path, name)} for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            strongconnect(node)
    # A package's __init__ that gathers its own modules is not a cycle between files of different trades.
    cycles = [c for c in cycles if not any(all(m == p or m.startswith(p + ".") for m in c) and p in c for p in c)]
    assert cycles == []


def test_few_imports_inside_functions_each_with_a_reason():
    inside = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, stmt, in_function in _imports(path, name):
            if in_function:
                inside.append((f"{path.relative_to(ROOT)}:{stmt.lineno}", "#" in lines[stmt.end_lineno - 1]))
    assert len(inside) <= MAX_IN_FUNCTION_IMPORTS, inside
    assert [where for where, reasoned in inside if not reasoned] == []


def test_flows_and_tasks_files_stay_small():
    long = {str(p.relative_to(ROOT)): n for package in ("flows", "tasks") for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


SAMPLE = Runbook.model_validate({
    "id": "sample", "title": {"zh": "样例", "en": "Sample"}, "description": {"zh": "样例", "en": "Sample"},
    "source": {"plan": 1, "title": "样例"}, "roles": {"lead": {"label": {"zh": "负责人", "en": "Lead"}}}, "lead": "lead",
    "severity": {"levels": [{"id": "1", "label": {"zh": "一级", "en": "Level 1"}}], "default": "1"},
    "steps": [
        {"kind": "action", "id": "act", "title": {"zh": "动作", "en": "Act"}, "http": {"url": "http://x.test"}},
        {"kind": "check", "id": "probe", "title": {"zh": "检查", "en": "Check"}, "alert_resolved": True, "limit": "1m"},
        {"kind": "manual", "id": "do", "title": {"zh": "手工", "en": "Do"}, "answerers": ["lead"],
         "fields": [{"id": "done", "type": "yes_no", "label": {"zh": "完成", "en": "Done"}}]},
        {"kind": "approval", "id": "ok", "title": {"zh": "批准", "en": "Approve"}, "answerers": ["lead"], "expires": "1h"},
        {"kind": "notify", "id": "tell", "title": {"zh": "通知", "en": "Tell"}, "to": ["lead"], "message": {"zh": "嗨", "en": "Hi"}},
        {"kind": "wait", "id": "pause", "title": {"zh": "等待", "en": "Wait"}, "duration": "1m"},
        {"kind": "grade", "id": "rate", "title": {"zh": "定级", "en": "Grade"}},
        {"kind": "report", "id": "write", "title": {"zh": "报告", "en": "Report"}, "document": {"zh": "# 报告", "en": "# Report"}, "to": ["lead"]},
        {"kind": "branch", "id": "fork", "title": {"zh": "分支", "en": "Branch"}, "cases": [{"when": "true", "steps": []}]},
        {"kind": "parallel", "id": "both", "title": {"zh": "并行", "en": "Parallel"},
         "tracks": [{"id": "one", "title": {"zh": "一", "en": "One"}, "steps": []}]},
        {"kind": "repeat", "id": "again", "title": {"zh": "重复", "en": "Repeat"}, "every": "1h", "until": "true",
         "steps": [{"kind": "notify", "id": "tell-again", "title": {"zh": "再通知", "en": "Tell again"}, "to": ["lead"],
                    "message": {"zh": "嗨", "en": "Hi"}}]},
        {"kind": "end", "id": "stop", "title": {"zh": "结束", "en": "End"}},
    ],
})


def test_every_step_kind_has_its_model_handler_checklist_and_shape():
    assert {step.kind for step in SAMPLE.steps} == set(KINDS), "the sample runbook must use every kind"
    text = checklist(SAMPLE, "en")
    for kind, cls in KINDS.items():
        assert kind in HANDLERS, f"no module in tasks/ runs {kind} steps"
        assert isinstance(cls.shape, tuple) and len(cls.shape) == 2 and all(cls.shape), f"{kind} has no diagram shape"
        assert f"[{kind}: " in text, f"the checklist does not show {kind} steps"
        if cls.in_time_rules:
            assert kind in BESIDE, f"{kind} may run in a time rule but nothing runs it there"
    step_text = {kind: step.checklist(lambda t: t.en if t else "", "en") for kind, step in ((s.kind, s) for s in SAMPLE.steps)}
    for kind in ("manual", "approval", "notify", "report"):  # the kinds with something of their own to say
        assert step_text[kind], f"the checklist says nothing of a {kind} step's own fields"
