"""The form a waiting step shows: a Prefect `RunInput` built from the step's fields, plus who answered.

The UI renders it from its JSON schema under the step's Markdown; the same model
validates answers from every other path (CLI, chat, SMS, scripts).

What Prefect's Resume form can show (its schema form, prefect 3.9): a select of the
strings of an `enum`, shown as they are; a switch between the branches of an `anyOf`,
each under its `title`; `oneOf` and titled `const` members the default UI ignores. And the
server checks every answer against this schema, whichever path it comes by. So a choice is
`anyOf` [its labels ("不能访问网络 / No network access"), its values]: the form opens on
the labels and the model maps a label back to its value, while answers given by value
(CLI, chat, scripts, the API) stay valid. An optional field is its plain type, not required
(pydantic's `anyOf [X, null]` would give it a type switch).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, create_model

from prefect.input import RunInput

from integrations.localtime import site_zone, zone_name
from runbooks.durations import human
from runbooks.model import FormField

ANSWERED_BY = "answered_by"
_TYPES: dict[str, Any] = {"yes_no": bool, "text": str, "number": float, "integer": int, "datetime": datetime}
_SCHEMAS: dict[str, dict[str, Any]] = {"yes_no": {"type": "boolean"}, "text": {"type": "string"}, "number": {"type": "number"},
                                       "integer": {"type": "integer"}, "datetime": {"type": "string", "format": "date-time"},
                                       "choice": {}}
OPTIONS = {"approval": ["approve", "reject"], "ack": ["ack"]}  # what a page offers to answer, by kind of wait
DECISIONS = {"approve": "批准 / Approve", "reject": "驳回 / Reject"}


def form_model(step, *, kind: str) -> type[RunInput]:
    """The RunInput class for a step: its fields, plus who answered (and decision / acknowledgement)."""
    fields: dict[str, Any] = {
        ANSWERED_BY: (str, Field(title="回答人 Answered by", description="Your name or id in the contacts directory.")),
    }
    if kind == "approval":
        typ, shown = _choice(DECISIONS)
        fields["decision"] = (typ, Field(json_schema_extra=_shown_as({"title": "决定 Decision", **shown})))
        fields["comment"] = (Optional[str], Field(None, json_schema_extra=_shown_as({"title": "意见 Comment", "type": "string"})))
    if kind == "ack":
        fields["acknowledged"] = (bool, Field(True, title="已收到 Acknowledged"))
    for f in getattr(step, "fields", []) or []:
        fields[f.id] = _field(f)
    name = "".join(part.capitalize() for part in step.id.split("-")) + "Form"
    return create_model(name, __base__=RunInput, **fields)


def choice_labels(f: FormField) -> dict[str, str]:
    """Each choice's value -> the label the form shows ('zh / en'; with the value when two labels read alike)."""
    labels = {c.value: c.label.both() for c in f.choices or []}
    seen = list(labels.values())
    return {v: (label if seen.count(label) == 1 else f"{label} ({v})") for v, label in labels.items()}


def _field(f: FormField) -> tuple[Any, Any]:
    schema: dict[str, Any] = {"title": f"{f.label.zh} {f.label.en}", **_SCHEMAS[f.type]}
    default = f.default
    if f.type == "choice":
        labels = choice_labels(f)
        typ, shown = _choice(labels)
        schema.update(shown)
        default = labels.get(default, default)
    elif f.type == "datetime":
        typ = Annotated[datetime, AfterValidator(_in_site_zone)]
        now = datetime.now(site_zone()).replace(second=0, microsecond=0)
        schema["description"] = f"站点时间 Site time: {zone_name(now)}; 例 e.g. {now.isoformat()}"
    else:
        typ = _TYPES[f.type]
    if default is not None:
        schema["default"] = default
    if f.required and f.default is None:
        return typ, Field(json_schema_extra=_shown_as(schema))
    return Optional[typ], Field(f.default, json_schema_extra=_shown_as(schema))


def _choice(labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """A choice (value -> label): its type, which takes a label or a value and keeps the value, and its schema,
    whose first branch the form opens on (the labels); the values stay valid for answers given by value."""
    values = {label: value for value, label in labels.items()}
    typ = Annotated[Literal[tuple(labels.keys())], BeforeValidator(lambda v: values.get(v, v) if isinstance(v, str) else v)]
    return typ, {"anyOf": [{"title": "选项 Choices", "type": "string", "enum": list(labels.values())},
                           {"title": "代码 Codes", "type": "string", "enum": list(labels)}]}


def _in_site_zone(at: datetime) -> datetime:
    """A time answered without an offset is the site's time (people answer in it)."""
    return at if at.tzinfo else at.replace(tzinfo=site_zone())


def _shown_as(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Replace the field's generated JSON schema with `schema` (what the Resume form renders and the server checks)."""
    def replace(generated: dict[str, Any]) -> None:
        generated.clear()
        generated.update(schema)
    return replace


def default_answer(step, *, kind: str, by: str = "drill") -> dict[str, Any]:
    """What --auto answers: every default; required fields without one get a plausible value."""
    answer: dict[str, Any] = {ANSWERED_BY: by}
    if kind == "approval":
        answer.update(decision="approve", comment="auto-approved in a drill")
    if kind == "ack":
        answer["acknowledged"] = True
    for f in getattr(step, "fields", []) or []:
        if f.default is not None:
            answer[f.id] = f.default
        elif f.required:
            answer[f.id] = {"yes_no": True, "text": "(drill)", "number": 0, "integer": 0,
                            "datetime": datetime.now(timezone.utc).isoformat(),
                            "choice": f.choices[0].value if f.choices else None}[f.type]
    return answer


def validate_answer(model: type[RunInput], values: dict[str, Any]) -> dict[str, Any]:
    instance = model(**values)
    return instance.model_dump(mode="json", exclude={"metadata"})


def options(kind: str) -> list[str]:
    return OPTIONS.get(kind, ["answer"])


def reason(exc: Exception) -> str:
    """Why an answer was refused, in one line (every field the validation named)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
    return str(exc)


def describe(inc, step, *, kind: str, allowed: list) -> str:
    """The Markdown shown above the form in the Prefect UI."""
    lines = []
    if inc.drill:
        lines.append("> **演练 DRILL** — 这是一次演练 / this is a drill.\n")
    lines.append(f"### {inc.text(step.title, 'zh')} / {inc.text(step.title, 'en')}")
    lines.append(f"*{inc.runbook.title.both()}*" + (f" · 级别 Severity: **{inc.level_label()}**" if inc.severity else ""))
    if step.instructions:
        lines += ["", inc.text(step.instructions, "zh"), "", inc.text(step.instructions, "en")]
    if kind == "ack":
        lines += ["", inc.both(step.message)]
    if allowed:
        lines += ["", "**可回答 May answer:** " + ", ".join(f"{p.name} (`{p.id}`)" for p in allowed)]
    lines += ["", "请在 *回答人 Answered by* 中填写您的姓名或编号 / Put your name or id in *Answered by*."]
    if step.expires:
        lines.append(f"\n未在 {human(step.expires, 'zh')} 内回答将按超时处理 / Unanswered after {human(step.expires)}, the step expires.")
    return "\n".join(lines)
