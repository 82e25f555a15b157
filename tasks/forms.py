"""The form a waiting step shows: a Prefect `RunInput` built from the step's fields, plus who answered.

The UI renders it from its JSON schema under the step's Markdown; the same model
validates answers from every other path (CLI, chat, SMS, scripts).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, create_model

from prefect.input import RunInput

from runbooks.model import FormField

ANSWERED_BY = "answered_by"
_TYPES: dict[str, Any] = {"yes_no": bool, "text": str, "number": float, "integer": int, "datetime": datetime}
OPTIONS = {"approval": ["approve", "reject"], "ack": ["ack"]}  # what a page offers to answer, by kind of wait


def form_model(step, *, kind: str) -> type[RunInput]:
    """The RunInput class for a step: its fields, plus who answered (and decision / acknowledgement)."""
    fields: dict[str, Any] = {
        ANSWERED_BY: (str, Field(title="回答人 Answered by", description="Your name or id in the contacts directory.")),
    }
    if kind == "approval":
        fields["decision"] = (Literal["approve", "reject"], Field(title="决定 Decision"))
        fields["comment"] = (Optional[str], Field(None, title="意见 Comment"))
    if kind == "ack":
        fields["acknowledged"] = (bool, Field(True, title="已收到 Acknowledged"))
    for f in getattr(step, "fields", []) or []:
        fields[f.id] = _field(f)
    name = "".join(part.capitalize() for part in step.id.split("-")) + "Form"
    return create_model(name, __base__=RunInput, **fields)


def _field(f: FormField) -> tuple[Any, Any]:
    if f.type == "choice":
        typ: Any = Literal[tuple(c.value for c in f.choices)]  # type: ignore[misc]
        description = "; ".join(f"{c.value} = {c.label.zh} {c.label.en}" for c in f.choices)
    else:
        typ, description = _TYPES[f.type], None
    title = f"{f.label.zh} {f.label.en}"
    if f.required and f.default is None:
        return typ, Field(title=title, description=description)
    return Optional[typ], Field(f.default, title=title, description=description)


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
