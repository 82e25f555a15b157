"""A runbook's typed parameters: the pydantic model of an incident's inputs, and errors that name the parameter."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from runbooks.model import Runbook

_PARAM_TYPES: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool, "datetime": datetime}


class ParameterError(ValueError):
    pass


def parameters_model(runbook: Runbook) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, p in runbook.parameters.items():
        typ: Any = Literal[tuple(p.choices)] if p.choices else _PARAM_TYPES[p.type]  # type: ignore[misc]
        fields[name] = (typ, ...) if p.is_required() else (Optional[typ], p.default)
    return create_model(f"{runbook.id}-parameters", __config__=ConfigDict(extra="forbid"), **fields)


def validate_parameters(runbook: Runbook, values: dict[str, Any]) -> dict[str, Any]:
    try:
        return parameters_model(runbook)(**(values or {})).model_dump()
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_url=False):
            name = ".".join(str(x) for x in e["loc"])
            if e["type"] == "missing":
                problems.append(f"parameter '{name}' is required ({runbook.parameters[name].label.both()})")
            elif e["type"] == "extra_forbidden":
                problems.append(f"'{name}' is not a parameter of {runbook.id}; known: {', '.join(runbook.parameters) or 'none'}")
            else:
                problems.append(f"parameter '{name}': {e['msg']}")
        raise ParameterError("; ".join(problems)) from None
