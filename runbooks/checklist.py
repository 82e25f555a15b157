"""A runbook as a readable checklist (Markdown), so the plan on paper and the plan that runs match.

`zh` is all Chinese (ids, conditions and templates stay as code), `en` all English, `both` the two side by side.
Roles are named by their labels, durations as people say them, choices by their labels, and every
assumption beyond the source (`note`) is marked on the step, rule or parameter it touches.
"""

from __future__ import annotations

from runbooks.durations import human, working_days
from runbooks.model import Runbook, Text

WORDS = {
    "zh": {
        "plan": "篇{plan}（{title}） · 第 {version} 版", "completed": "超出原文的补充", "parameters": "参数", "roles": "角色",
        "severity": "级别", "steps": "步骤", "thresholds": "时限规则（事件处理期间）", "deadlines": "期限",
        "lead": "牵头", "default": "默认", "rule": "级别 `{level}`，条件 `{when}`：{reason}", "otherwise_level": "其余情况：级别 `{level}`",
        "ungraded": "定级前不带级别", "when": "（条件：`{when}`）", "note": "⚠ 超出原文：", "on_expiry": "过期时",
        "on_reject": "退回时", "otherwise": "否则", "case": "情形 {i}：条件 `{when}`", "any": "任何人", "after": "，在 {tracks} 之后",
        "track": "并行分支 **{title}**（{role}）{after}{when}：", "incident": "事件开始", "param": "参数 `{name}`（{label}）",
        "step_done": "步骤 `{id}` 完成", "holds": "`{cond}` 首次成立", "threshold": "自{start}起 {span} 后{when}{until}",
        "until": "；`{id}` 完成后不再触发", "deadline": "自{start}起 {span} 内，由 `{met_by}` 完成{when}",
        "calendar": "{n} 个自然日（至第 {n} 日 24 时）", "same_day": "当日（24 时前）", "sep": "：",
        "types": {"string": "文本", "number": "数字", "integer": "整数", "boolean": "是/否", "datetime": "日期时间"},
    },
    "en": {
        "plan": "plan {plan} ({title}) · version {version}", "completed": "Completed beyond the source", "parameters": "Parameters",
        "roles": "Roles", "severity": "Severity", "steps": "Steps", "thresholds": "Thresholds (while the incident is open)",
        "deadlines": "Deadlines", "lead": "lead", "default": "default", "rule": "level `{level}` when `{when}`: {reason}",
        "otherwise_level": "otherwise level `{level}`", "ungraded": "no level until graded", "when": " (when `{when}`)",
        "note": "⚠ beyond the source: ", "on_expiry": "on expiry", "on_reject": "on reject", "otherwise": "otherwise",
        "case": "case {i}: when `{when}`", "any": "anyone", "after": " after {tracks}", "track": "track **{title}** ({role}){after}{when}:",
        "incident": "the incident's start", "param": "parameter `{name}` ({label})", "step_done": "step `{id}` done",
        "holds": "`{cond}` first holds", "threshold": "after {span} from {start}{when}{until}", "until": ", until `{id}` is done",
        "deadline": "within {span} from {start}, met by `{met_by}`{when}", "calendar": "{n} calendar day(s) (to the end of the day)",
        "same_day": "the same day (by midnight)",
        "sep": ": ", "types": {},
    },
}


class _Say:
    """Renders a Text in the checklist's language; `roles` names roles by their labels."""

    def __init__(self, rb: Runbook, language: str):
        self.rb, self.language = rb, language

    def __call__(self, text: Text | str | None) -> str:
        if text is None:
            return ""
        if isinstance(text, str):  # a plain string is English only
            return "" if self.language == "zh" else text
        return text.both() if self.language == "both" else text.get(self.language)

    def roles(self, ids: list[str]) -> str:
        sep = "、" if self.language == "zh" else ", "
        return sep.join(self(self.rb.roles[r].label) if r in self.rb.roles else r for r in ids)


def _words(language: str) -> dict:
    return WORDS["zh" if language == "zh" else "en"]


def _note(say: _Say, note: Text | None, w: dict) -> list[str]:
    return [f"- {w['note']}{say(note)}"] if note is not None else []


def _step_lines(step, say: _Say, depth: int, number: str) -> list[str]:
    w = _words(say.language)
    pad = "    " * depth
    who = f" — *{say.roles([step.role])}*" if step.role else ""
    cond = w["when"].format(when=step.when) if step.when else ""
    lines = [f"{pad}{number}. **{say(step.title)}** `[{step.kind}: {step.id}]`{who}{cond}"]
    body = pad + "    "
    if step.instructions:
        for line in say(step.instructions).splitlines():
            lines.append(f"{body}{line}")
    lines += [body + line for line in _note(say, step.note, w)]
    lines += [body + line for line in step.checklist(say, say.language)]
    for label, children in (("on_expiry", getattr(step, "on_expiry", [])), ("on_reject", getattr(step, "on_reject", [])),
                            ("otherwise", getattr(step, "otherwise", []))):
        if children:
            lines.append(f"{body}- {w[label]}{w['sep'].rstrip()}")
            lines += _steps(children, say, depth + 2)
    for i, case in enumerate(getattr(step, "cases", []) or [], 1):
        lines.append(f"{body}- {w['case'].format(i=i, when=case.when)}")
        lines += _steps(case.steps, say, depth + 2)
    for track in getattr(step, "tracks", []) or []:
        after = w["after"].format(tracks=", ".join(f"`{t}`" for t in track.after)) if track.after else ""
        when = w["when"].format(when=track.when) if track.when else ""
        role = say.roles([track.role]) if track.role else w["any"]
        lines.append(f"{body}- {w['track'].format(title=say(track.title), role=role, after=after, when=when)}")
        lines += [body + "    " + line for line in _note(say, track.note, w)]
        lines += _steps(track.steps, say, depth + 2)
    if step.kind == "repeat":
        lines += _steps(step.steps, say, depth + 2)
    return lines


def _steps(steps, say: _Say, depth: int) -> list[str]:
    out: list[str] = []
    for i, step in enumerate(steps, 1):
        out += _step_lines(step, say, depth, str(i))
    return out


def _start(rb: Runbook, start: str, say: _Say) -> str:
    w = _words(say.language)
    if start.startswith("param:"):
        param = rb.parameters.get(start[6:])
        return w["param"].format(name=start[6:], label=say(param.label) if param else "")
    if start.startswith("step:"):
        return w["step_done"].format(id=start[5:])
    if start.startswith("holds:"):
        return w["holds"].format(cond=start[6:].strip())
    return w["incident"]


def checklist(rb: Runbook, language: str = "both") -> str:
    say = _Say(rb, language)
    w = _words(language)
    zh = language == "zh"
    lines = [f"# {say(rb.title)}", "", f"`{rb.id}` · " + w["plan"].format(plan=rb.source.plan, title=rb.source.title, version=rb.version), ""]
    lines += [say(rb.description), ""]
    if rb.source.completed and say(rb.source.completed):
        lines += [f"> {w['completed']}{w['sep']}{say(rb.source.completed)}", ""]
    if rb.parameters:
        lines.append(f"## {w['parameters']}")
        for name, p in rb.parameters.items():
            kind = w["types"].get(p.type, p.type)
            value = ("是" if p.default else "否") if zh and isinstance(p.default, bool) else f"`{p.default}`"
            default = f"{'，' if zh else ', '}{w['default']} {value}" if p.default not in (None, "") else ""
            lines.append(f"- `{name}` ({kind}){w['sep']}{say(p.label)}{default}")
            lines += ["  " + line for line in _note(say, p.note, w)]
        lines.append("")
    lines.append(f"## {w['roles']}")
    for rid, role in rb.roles.items():
        lines.append(f"- `{rid}`{w['sep']}{say(role.label)}" + (f" — {w['lead']}" if rid == rb.lead else ""))
    lines.append("")
    if rb.severity:
        lines.append(f"## {w['severity']}")
        for level in rb.severity.levels:
            lines.append(f"- `{level.id}`{w['sep']}{say(level.label)}" + (f" — {say(level.description)}" if level.description else ""))
        for rule in rb.severity.rules:
            lines.append("  - " + w["rule"].format(level=rule.level, when=rule.when, reason=say(rule.reason)))
            lines += ["    " + line for line in _note(say, rule.note, w)]
        lines.append("  - " + w["otherwise_level"].format(level=rb.severity.default))
        if rb.severity.before_grading == "none":
            lines.append(f"  - {w['ungraded']}")
        lines.append("")
    lines.append(f"## {w['steps']}")
    lines += _steps(rb.steps, say, 0)
    if rb.thresholds:
        lines += ["", f"## {w['thresholds']}"]
        for th in rb.thresholds:
            until = w["until"].format(id=th.until_step) if th.until_step else ""
            cond = w["when"].format(when=th.when) if th.when else ""
            span = human(th.after, "zh" if zh else "en")
            lines.append(f"- **{say(th.title)}**{w['sep']}" + w["threshold"].format(span=span, start=_start(rb, th.start, say), when=cond, until=until))
            lines += ["    " + line for line in _note(say, th.note, w)]
            lines += _steps(th.steps, say, 1)
    if rb.deadlines:
        lines += ["", f"## {w['deadlines']}"]
        for dl in rb.deadlines:
            if dl.working_days:
                span = working_days(dl.working_days, "zh" if zh else "en")
            elif dl.calendar_days is not None:
                span = w["same_day"] if dl.calendar_days == 0 else w["calendar"].format(n=dl.calendar_days)
            else:
                span = human(dl.within, "zh" if zh else "en")
            cond = w["when"].format(when=dl.when) if dl.when else ""
            lines.append(f"- **{say(dl.title)}**{w['sep']}" + w["deadline"].format(span=span, start=_start(rb, dl.start, say), met_by=dl.met_by, when=cond))
            lines += ["    " + line for line in _note(say, dl.note, w)]
            lines += _steps(dl.on_miss, say, 1)
    return "\n".join(lines) + "\n"
