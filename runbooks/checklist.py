"""A runbook as a readable checklist (Markdown), so the plan on paper and the plan that runs match."""

from __future__ import annotations

from runbooks.durations import human, working_days
from runbooks.model import Runbook, Text


def _t(text: Text | None, language: str) -> str:
    if text is None:
        return ""
    return text.both() if language == "both" else text.get(language)


def _step_lines(step, language: str, depth: int, number: str) -> list[str]:
    pad = "    " * depth
    who = f" — *{step.role}*" if step.role else ""
    cond = f" (when `{step.when}`)" if step.when else ""
    lines = [f"{pad}{number}. **{_t(step.title, language)}** `[{step.kind}: {step.id}]`{who}{cond}"]
    body = pad + "    "
    if step.instructions:
        for line in _t(step.instructions, language).splitlines():
            lines.append(f"{body}{line}")
    lines += [body + line for line in step.checklist(lambda text: _t(text, language), language)]
    for label, children in (("on expiry", getattr(step, "on_expiry", [])), ("on reject", getattr(step, "on_reject", [])),
                            ("otherwise", getattr(step, "otherwise", []))):
        if children:
            lines.append(f"{body}- {label}:")
            lines += _steps(children, language, depth + 2)
    for i, case in enumerate(getattr(step, "cases", []) or [], 1):
        lines.append(f"{body}- case {i}: when `{case.when}`")
        lines += _steps(case.steps, language, depth + 2)
    for track in getattr(step, "tracks", []) or []:
        after = f" after {', '.join(track.after)}" if track.after else ""
        lines.append(f"{body}- track **{_t(track.title, language)}** ({track.role or 'any'}){after}:")
        lines += _steps(track.steps, language, depth + 2)
    return lines


def _steps(steps, language: str, depth: int) -> list[str]:
    out: list[str] = []
    for i, step in enumerate(steps, 1):
        out += _step_lines(step, language, depth, str(i))
    return out


def checklist(rb: Runbook, language: str = "both") -> str:
    lines = [f"# {_t(rb.title, language)}", "", f"`{rb.id}` · plan {rb.source.plan} ({rb.source.title}) · version {rb.version}", ""]
    lines += [_t(rb.description, language), ""]
    if rb.source.completed:
        lines += [f"> Completed beyond the source: {rb.source.completed}", ""]
    if rb.parameters:
        lines.append("## Parameters")
        for name, p in rb.parameters.items():
            lines.append(f"- `{name}` ({p.type}): {_t(p.label, language)}" + (f", default {p.default}" if p.default is not None else ""))
        lines.append("")
    lines.append("## Roles")
    for rid, role in rb.roles.items():
        lines.append(f"- `{rid}`: {_t(role.label, language)}" + (" — lead" if rid == rb.lead else ""))
    lines.append("")
    if rb.severity:
        lines.append("## Severity")
        for level in rb.severity.levels:
            lines.append(f"- `{level.id}`: {_t(level.label, language)}" + (f" — {_t(level.description, language)}" if level.description else ""))
        for rule in rb.severity.rules:
            lines.append(f"  - level `{rule.level}` when `{rule.when}`: {_t(rule.reason, language)}")
        lines.append(f"  - otherwise level `{rb.severity.default}`")
        lines.append("")
    lines.append("## Steps")
    lines += _steps(rb.steps, language, 0)
    if rb.thresholds:
        lines += ["", "## Thresholds (while the incident is open)"]
        for th in rb.thresholds:
            until = f", until `{th.until_step}` is done" if th.until_step else ""
            cond = f", when `{th.when}`" if th.when else ""
            lines.append(f"- **{_t(th.title, language)}**: after {human(th.after)} from {th.start}{cond}{until}")
            lines += _steps(th.steps, language, 1)
    if rb.deadlines:
        lines += ["", "## Deadlines"]
        for dl in rb.deadlines:
            span = working_days(dl.working_days) if dl.working_days else human(dl.within)
            lines.append(f"- **{_t(dl.title, language)}**: within {span} from {dl.start}, met by `{dl.met_by}`")
            lines += _steps(dl.on_miss, language, 1)
    return "\n".join(lines) + "\n"
