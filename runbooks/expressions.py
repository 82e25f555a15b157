"""Conditions and message templates, both Jinja2 in a sandbox.

A condition is a Jinja expression (``severity == '1' and steps.triage.scope == 'inside'``);
a template is Jinja text (``故障时间 {{ steps.record.fault_time }}``). Names available:
``params``, ``severity``, ``steps`` (answers and results by step id), ``incident``
(id, runbook, drill, started, elapsed_minutes), ``alert`` and, in a check's
``until``, ``result``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ExpressionError(ValueError):
    pass


class _Undefined(ChainableUndefined):
    """In conditions a missing name (a step not run, an answer not given) is simply false."""


_conditions = ImmutableSandboxedEnvironment(undefined=_Undefined)
_templates = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=2048)
def _compiled_expression(source: str):
    try:
        return _conditions.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or str(exc)) from None


@lru_cache(maxsize=2048)
def _compiled_template(source: str):
    try:
        return _templates.from_string(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"line {exc.lineno}: {exc.message}") from None


def check_expression(source: str) -> None:
    _compiled_expression(source)


def check_template(source: str) -> None:
    _compiled_template(source)


def evaluate(source: str, context: dict[str, Any]) -> bool:
    """True when the condition holds. A missing name makes it false, never an error."""
    try:
        return bool(_compiled_expression(source)(**context))
    except (TypeError, ArithmeticError, UndefinedError):
        return False


def is_plain(source: str) -> bool:
    """Text that renders as itself: no Jinja markup, no carriage return (Jinja turns each line break into a bare newline)
    and no trailing newline (Jinja drops one)."""
    return "{" not in source and "\r" not in source and not source.endswith("\n")


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template; a name that is not there yet renders as '—' with its name."""
    try:
        return _compiled_template(source).render(**context)
    except Exception:
        lenient = ImmutableSandboxedEnvironment(undefined=_Placeholder)
        return lenient.from_string(source).render(**context)


class _Placeholder(StrictUndefined):
    def __str__(self) -> str:
        return f"—({self._undefined_name})"

    __html__ = __str__

    def __getattr__(self, name: str):  # chains like steps.x.y render as a placeholder too
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name=f"{self._undefined_name}.{name}")


def referenced_steps(source: str) -> set[str]:
    """Step ids a condition or template reads through ``steps.ID`` or ``steps['ID']``."""
    try:
        tree = _conditions.parse("{{ " + source + " }}")
    except TemplateSyntaxError:
        return set()
    refs: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr):
                refs.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                refs.add(node.arg.value)
    return refs
