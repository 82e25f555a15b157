"""Every drill runs twice: here (`[local]`, the flow called in this process, as `runbook run` does) and on
the served stack (`[served]`, a deployment run in a process of its own with suspended waits and the
escalation watcher, as `runbook fire`, alerts and production do), with the same assertions.

Only tests that call `drill()` (directly or through a helper of their module) are doubled; the others
(docs, grading tables, expressions) run once, as before.
"""

from __future__ import annotations

import types

import pytest

# tests.drill is imported inside the hooks: this conftest loads before tests/conftest.py's pytest_configure
# has pointed Prefect and the settings at the session's server, and Prefect reads its settings at import.
MODES = ("local", "served")

# test function name -> why its served run is skipped (the served run cannot meet what the test checks)
LOCAL_ONLY: dict[str, str] = {
    "test_a_passed_hour_is_on_the_journal_before_the_report_starts_however_slow_the_server":
        "it slows the server's answers in this process; the served run's process is another",
}


def _calls_drill(func, seen: set | None = None) -> bool:
    """Whether the test calls tests.drill.drill, itself or through functions of its own module."""
    from tests.drill import drill

    seen = set() if seen is None else seen
    if func in seen or not isinstance(func, types.FunctionType):
        return False
    seen.add(func)
    module_globals = func.__globals__

    def names(code):
        yield from code.co_names
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                yield from names(const)

    for name in names(func.__code__):
        value = module_globals.get(name)
        if value is drill:
            return True
        if isinstance(value, types.FunctionType) and value.__module__ == func.__module__ and _calls_drill(value, seen):
            return True
    return False


def pytest_generate_tests(metafunc):
    if "drill_mode" not in metafunc.fixturenames or not _calls_drill(metafunc.function):
        return
    reason = LOCAL_ONLY.get(metafunc.function.__name__)
    served = pytest.param("served", marks=pytest.mark.skip(reason=f"local only: {reason}")) if reason else "served"
    metafunc.parametrize("drill_mode", ["local", served], indirect=True)


@pytest.fixture(autouse=True)
def drill_mode(request):
    """`local` or `served`: how drill() runs this test (`local` for tests that do not drill)."""
    from tests.drill import drill_mode as use

    mode = getattr(request, "param", "local")
    stack = request.getfixturevalue("served_stack") if mode == "served" else None
    with use(mode, stack):
        yield mode
