"""Which runbook an alert starts, with which parameters and grade.

``config/routes.yaml`` holds an ordered list of routes; the first whose label
matchers all hold wins. If none does, an alert that names its runbook itself
(label or annotation ``runbook: <id>``) goes there, its labels filling the
runbook's parameters of the same name. Otherwise it is not routed: the reason
says why, so whoever reads the unrouted log can add a route, and when routes.yaml
has an ``unrouted`` route the alert still starts that runbook (the duty officer
is paged and picks the plan): an unrouted alert is still an alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from integrations.alerts.model import SEVERITIES, Alert
from runbooks.loader import load_file
from runbooks.yamlfile import read_yaml

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


class Matcher(BaseModel):
    """One label test, written like Alertmanager's: ``name=value``, ``name!=value``,
    ``name=~regex``, ``name!~regex``. Regexes match the whole value; a missing label is ''."""

    model_config = ConfigDict(extra="forbid")

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            m = _MATCHER.match(data)
            if not m:
                raise ValueError(f"matcher {data!r} is not 'label=value', 'label!=value', 'label=~regex' or 'label!~regex'")
            label, op, value = m.groups()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            return {"label": label, "op": op, "value": value}
        return data

    @model_validator(mode="after")
    def _regex_compiles(self) -> "Matcher":
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"regex {self.value!r} for label '{self.label}' does not compile: {exc}") from None
        return self

    def holds(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


ALERT_FIELDS = ("starts_at", "ends_at", "fingerprint", "status", "severity", "source", "source_url", "group_key")


class ParamSource(BaseModel):
    """Where one runbook parameter comes from: a label, an annotation, a field of the alert
    itself, or a fixed value. Shorthand in YAML: ``labels.instance``, ``annotations.summary``,
    ``alert.starts_at``."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = None
    annotation: str | None = None
    alert: Literal[ALERT_FIELDS] | None = Field(None, description="A field of the normalised alert, e.g. starts_at.")
    value: Any = None
    default: Any = Field(None, description="Used when the label or annotation is absent.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            kind, dot, name = data.partition(".")
            if dot and name and kind in ("labels", "annotations"):
                return {kind[:-1]: name}
            if dot and kind == "alert":
                return {"alert": name}
            raise ValueError(f"{data!r} is not 'labels.<name>', 'annotations.<name>' or 'alert.<field>'; "
                             f"for a fixed value write {{value: {data!r}}}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "ParamSource":
        given = [k for k in ("label", "annotation", "alert") if getattr(self, k)] + (["value"] if self.value is not None else [])
        if len(given) != 1:
            raise ValueError("give exactly one of label, annotation, alert or value")
        return self

    def resolve(self, alert: Alert) -> Any:
        if self.value is not None:
            return self.value
        if self.alert:
            found = alert.model_dump(mode="json")[self.alert]
        else:
            found = alert.labels.get(self.label) if self.label else alert.annotations.get(self.annotation)
        return found if found is not None else self.default


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Shown in logs and the incident; defaults to the runbook id.")
    match: list[Matcher] = Field(default_factory=list, description="All must hold. An empty list matches every alert.")
    runbook: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Runbook id to start.")
    parameters: dict[str, ParamSource] = Field(default_factory=dict, description="Runbook parameter -> where its value comes from.")
    severity: dict[str, str] = Field(default_factory=dict, description="Alert severity (critical, high, warning, info) -> the runbook's level id.")
    drill: bool = Field(False, description="Start the runbook as a drill (for trying a route out).")

    @field_validator("severity")
    @classmethod
    def _known_severities(cls, value: dict[str, str]) -> dict[str, str]:
        for k in value:
            if k not in SEVERITIES:
                raise ValueError(f"severity '{k}' is not one of {', '.join(SEVERITIES)}")
        return {k: str(v) for k, v in value.items()}

    def matches(self, alert: Alert) -> bool:
        return all(m.holds(alert.labels) for m in self.match)


class Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Route alerts that carry runbook: <id> themselves.")
    key: str = Field("runbook", description="Label or annotation that names the runbook.")
    severity: dict[str, str] = Field(default_factory=dict, description="Alert severity -> level id, for runbooks reached this way.")


class DefaultRoute(BaseModel):
    """Where an alert goes that no route and no runbook label takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("unrouted", description="Shown in logs and the incident.")
    runbook: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Runbook id to start, e.g. unrouted-alert.")
    parameters: dict[str, ParamSource] = Field(default_factory=dict, description="Runbook parameter -> where its value comes from.")
    severity: dict[str, str] = Field(default_factory=dict, description="Alert severity -> the runbook's level id.")
    drill: bool = Field(False, description="Start the runbook as a drill.")

    _known_severities = field_validator("severity")(Route._known_severities.__func__)


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: list[Route] = Field(default_factory=list, description="Tried in order; the first match wins.")
    fallback: Fallback = Field(default_factory=Fallback)
    unrouted: DefaultRoute | None = Field(None, description="The runbook an alert starts when nothing else takes it; "
                                          "without it such an alert is only logged.")


@dataclass
class Decision:
    """Where an alert goes, or why it goes nowhere."""

    runbook: str | None
    route: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None
    drill: bool = False
    reason: str = ""             # why no route took it (also set when the default route did)
    follow_group: bool = False   # goes to whatever incident its group started (PagerDuty acknowledge/resolve)

    @property
    def routed(self) -> bool:
        return self.runbook is not None or self.follow_group

    @property
    def unrouted(self) -> bool:
        """No route took it (it may still go to the default route's runbook)."""
        return bool(self.reason)


class RoutesError(ValueError):
    """routes.yaml cannot be used; the message names the entry and the fix."""


def load_routes(path: Path) -> Routes:
    if not path.exists():
        return Routes()
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RoutesError(f"{path} is not valid YAML: {exc}") from None
    try:
        return Routes.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: " + ".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors()]
        raise RoutesError("\n".join(lines)) from None


def runbook_parameters(runbooks_dir: Path, runbook_id: str) -> dict | None:
    """The runbook's declared parameters, or None if it cannot be read here."""
    path = runbooks_dir / f"{runbook_id}.yaml"
    try:
        return _parameters(path, path.stat().st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=128)
def _parameters(path: Path, mtime: int) -> dict | None:
    try:
        return dict(load_file(path).parameters)
    except Exception:  # a broken runbook is reported by `runbook check`; routing just cannot type its values
        return None


def route(alert: Alert, routes: Routes, runbooks_dir: Path | None = None) -> Decision:
    """First matching route, else the alert's own runbook label, else the default route, else not routed (with why).

    A PagerDuty acknowledge or resolve names its alert by dedup_key only: it follows the group to
    the incident the trigger started, decided when the spool reaches it (after the trigger)."""
    if alert.source == "pagerduty" and alert.extra.get("event_action") in ("acknowledge", "resolve"):
        return Decision(None, route="its dedup_key's incident", follow_group=True)
    for r in routes.routes:
        if r.matches(alert):
            params = {}
            for name, src in r.parameters.items():
                value = src.resolve(alert)
                if value is not None:
                    params[name] = value
            declared = runbook_parameters(runbooks_dir, r.runbook) if runbooks_dir else None
            return Decision(r.runbook, r.name or r.runbook, coerce(params, declared),
                            r.severity.get(alert.severity or ""), r.drill)

    fb = routes.fallback
    named = alert.labels.get(fb.key) or alert.annotations.get(fb.key)
    if fb.enabled and named:
        declared = runbook_parameters(runbooks_dir, named) if runbooks_dir else None
        if runbooks_dir is not None and declared is None:
            return to_default(alert, routes, runbooks_dir,
                              f"the alert names runbook '{named}' ({fb.key}: {named}), but {runbooks_dir}/{named}.yaml "
                              "does not exist or does not load; fix the alert's label or add the runbook")
        params = {}
        for name, spec in (declared or {}).items():
            if name in alert.labels:
                params[name] = alert.labels[name]
            elif name in alert.annotations:
                params[name] = alert.annotations[name]
            elif spec.type == "datetime" and spec.default is None and alert.starts_at:
                params[name] = alert.starts_at.isoformat()  # fault_time, outage_started: the alert's start is the best we know
        return Decision(named, f"{fb.key} label", coerce(params, declared), fb.severity.get(alert.severity or ""))

    tried = ", ".join(r.name or r.runbook for r in routes.routes) or "none defined"
    return to_default(alert, routes, runbooks_dir, f"no route matches labels {alert.labels} (routes tried: {tried}) and the "
                      f"alert has no '{fb.key}' label or annotation; add a route to routes.yaml")


def to_default(alert: Alert, routes: Routes, runbooks_dir: Path | None, reason: str) -> Decision:
    """Not routed, for ``reason``: to the default route's runbook when there is one."""
    default = routes.unrouted
    if default is None:
        return Decision(None, reason=reason)
    params = {name: value for name, src in default.parameters.items() if (value := src.resolve(alert)) is not None}
    declared = runbook_parameters(runbooks_dir, default.runbook) if runbooks_dir else None
    return Decision(default.runbook, default.name, coerce(params, declared), default.severity.get(alert.severity or ""),
                    default.drill, reason=reason)


def coerce(params: dict[str, Any], declared: dict | None) -> dict[str, Any]:
    """Labels are text; give the runbook numbers and booleans where it declares them.
    A value that does not convert is passed as text, for the runbook to refuse with its own message."""
    if not declared:
        return params
    out = dict(params)
    for name, value in params.items():
        kind = getattr(declared.get(name), "type", "string")
        if not isinstance(value, str):
            continue
        try:
            if kind == "integer":
                out[name] = int(value)
            elif kind == "number":
                out[name] = float(value)
            elif kind == "boolean" and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                out[name] = value.lower() in ("true", "yes", "1")
        except ValueError:
            pass
    return out


def check_routes(routes: Routes, runbooks_dir: Path) -> list[str]:
    """Problems that would make routed alerts fail later, found now (`runbook lint` runs it over the site's routes)."""
    problems = []
    named = [(f"routes[{n}] ({r.name or r.runbook})", r) for n, r in enumerate(routes.routes)]
    if routes.unrouted:
        named.append((f"unrouted ({routes.unrouted.name})", routes.unrouted))
    for where, r in named:
        path = runbooks_dir / f"{r.runbook}.yaml"
        if not path.exists():
            problems.append(f"{where}: runbook '{r.runbook}' does not exist in {runbooks_dir}; fix the id or add the runbook")
            continue
        try:
            runbook = load_file(path)
        except Exception as exc:
            problems.append(f"{where}: runbook '{r.runbook}' does not load: {exc}")
            continue
        for name in r.parameters:
            if name not in runbook.parameters:
                problems.append(f"{where}: '{name}' is not a parameter of {r.runbook} "
                                f"(it has {', '.join(runbook.parameters) or 'none'})")
        for name, spec in runbook.parameters.items():
            if spec.is_required() and name not in r.parameters:
                problems.append(f"{where}: {r.runbook} requires parameter '{name}' and the route does not fill it; "
                                f"add e.g. {name}: labels.{name}")
        levels = {lv.id for lv in runbook.severity.levels} if runbook.severity else set()
        for word, level in r.severity.items():
            if level not in levels:
                problems.append(f"{where}: severity {word} -> '{level}' is not a level of {r.runbook} "
                                f"(levels: {', '.join(sorted(levels)) or 'none'})")
    return problems
