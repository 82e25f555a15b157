"""The runbook language: what a plan may say, as pydantic models.

A runbook is metadata, typed parameters, severity levels with grading rules,
roles, an ordered list of steps, and the incident's time rules (thresholds that
fire while it is open, deadlines that must be met). Steps are a discriminated
union keyed by ``kind``; ``STEP_KINDS`` is the one list of kinds.

Each kind's class says everything the language knows of it: its fields, whether
it acts once per incident, whether it may run inside a time rule, how the
diagram draws it and what the checklist says of it. How it runs is its module
in ``tasks/`` (registered under the same kind name; a test keeps them in step).

Every field carries a description: together they are the runbook author's
manual (``runbook schema`` prints them).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Callable, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from runbooks.durations import human, parse_duration
from runbooks.expressions import ExpressionError, check_expression, check_template, referenced_steps

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
RESERVED_ANSWER_KEYS = {"status", "result", "answered_by", "answered_at", "error", "attempts"}

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ITERATION_MARK = "--"  # `<step id>--<n>`: the n-th run of a step inside a repeat; reserved in authored ids
NOTE_DOC = ("What this assumes beyond the source plan (a completion, a figure the plan does not give, a site setting), "
            "in both languages; shown on the step in `runbook show` and the docs.")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Text(Model):
    """Text in both languages of the plan. May contain Jinja templates where noted."""

    zh: str = Field(description="中文.")
    en: str = Field(description="English.")

    def get(self, language: str) -> str:
        return self.zh if language == "zh" else self.en

    def both(self) -> str:
        return self.zh if self.zh == self.en else f"{self.zh} / {self.en}"


class Source(Model):
    plan: int = Field(description="Number of the plan in shared/seeds/emergency-plans.zh.txt (篇N).")
    title: str = Field(description="The plan's own Chinese title.")
    also: list[int] = Field(default_factory=list, description="Other plans in the source this runbook serves too (plan 12 repeats plan 11).")
    completed: Text | str | None = Field(None, description="Where the source was cut short or skipped items, what this runbook added and why (both languages; a plain string is English only). Mark each addition on its step too, with `note`.")


def plans_served(source: Source) -> list[int]:
    return sorted({source.plan, *source.also})


class Parameter(Model):
    type: Literal["string", "number", "integer", "boolean", "datetime"] = Field("string", description="Value type.")
    label: Text = Field(description="Label shown to whoever starts the runbook.")
    note: Text | None = Field(None, description=NOTE_DOC)
    default: Any = Field(None, description="Value when none is given.")
    required: bool | None = Field(None, description="Whether a value must be given; by default, required when there is no default.")
    choices: list[str] | None = Field(None, description="Allowed values, for a string parameter.")


    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


class Level(Model):
    id: str = Field(description="Level id used in rules, branches and overrides, e.g. '1' or 'serious'.")
    label: Text = Field(description="Name of the level, e.g. 一级故障 / Level 1 (major).")
    description: Text | None = Field(None, description="What the level means, from the plan.")


class GradingRule(Model):
    level: str = Field(description="Level this rule assigns.")
    when: str = Field(description="Condition over params and earlier answers; the first rule that holds decides.")
    reason: Text = Field(description="Why, in the plan's words: shown in the run and the report.")
    note: Text | None = Field(None, description=NOTE_DOC)


class Severity(Model):
    levels: list[Level] = Field(description="Levels, most severe first.")
    rules: list[GradingRule] = Field(default_factory=list, description="Grading rules, evaluated in order by `grade` steps.")
    default: str = Field(description="Level when no rule holds.")
    before_grading: Literal["default", "none"] = Field(
        "default", description="The incident's level before its first `grade` step: the default level, or none "
        "(pages and conditions carry no level until something has been graded, e.g. a forecast quake that has not struck).")


class Role(Model):
    label: Text = Field(description="Role name, e.g. 信息科科长 / Head of the information department.")
    description: Text | None = Field(None, description="What the role does in this plan.")


class Escalation(Model):
    after: Duration = Field(description="Time without an answer before this tier is paged.")
    notify: list[str] = Field(description="Roles paged at this tier.")
    message: Text | None = Field(None, description="Message template; defaults to the step's title and instructions.")


# ---------------------------------------------------------------- steps


Say = Callable[[Text | None], str]  # renders a Text in the checklist's language


class StepBase(Model):
    # What the language knows of a kind beyond its fields; each kind overrides what differs.
    acts_once: ClassVar[bool] = False  # acts on the world: done once per incident, a re-run finds its result instead
    in_time_rules: ClassVar[bool] = False  # may run inside a threshold or deadline, beside the main line
    shape: ClassVar[tuple[str, str]] = ("[", "]")  # how the docs' diagram draws it (Mermaid node brackets)

    def checklist(self, say: Say, language: str) -> list[str]:
        """What the checklist says of this step beyond its title and instructions (children are listed by the caller)."""
        return []

    id: str = Field(pattern=ID_PATTERN, description="Unique id within the runbook: lowercase letters, digits, dashes.")
    title: Text = Field(description="Short imperative title, shown as the task run's subject and in the checklist.")
    instructions: Text | None = Field(None, description="Markdown instructions for the people doing the step; Jinja template.")
    note: Text | None = Field(None, description=NOTE_DOC)
    role: str | None = Field(None, description="Role that performs the step (the plan's 主值, 网络管理员...).")
    when: str | None = Field(None, description="Condition; the step is skipped when it is false.")
    retries: int = Field(0, ge=0, le=20, description="Times a failed step is tried again.")
    retry_delay: Duration = Field(timedelta(seconds=0), description="Wait between tries.")
    timeout: Duration | None = Field(None, description="Time one try may take before it counts as failed.")
    on_failure: Literal["abort", "continue", "escalate"] = Field(
        "abort", description="abort ends the incident as failed; continue records the failure and goes on; "
        "escalate pages the runbook's lead role and asks them to retry, continue or abort.")


class HttpRequest(Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(description="Address; Jinja template.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers; values are templates.")
    json_body: Any = Field(None, alias="json", description="JSON body; string values are templates.")
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204], description="Statuses that count as success.")
    timeout: Duration = Field(timedelta(seconds=10), description="Time one request may take.")


class Target(Model):
    """Where an action or a probe goes: an endpoint named in site config, or an inline request."""

    endpoint: str | None = Field(None, description="Name of an endpoint in config/site.yaml (has its own drill target).")
    http: HttpRequest | None = Field(None, description="An inline HTTP request.")
    args: dict[str, Any] = Field(default_factory=dict, description="Body fields of the endpoint's request; strings are templates.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Target":
        given = [k for k in ("endpoint", "http") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of endpoint or http")
        return self


class ActionStep(StepBase, Target):
    kind: Literal["action"]
    acts_once: ClassVar[bool] = True
    in_time_rules: ClassVar[bool] = True
    shape: ClassVar[tuple[str, str]] = ("[[", "]]")

    def checklist(self, say: Say, language: str) -> list[str]:
        target = f"`{self.endpoint}`" if self.endpoint else f"`{self.http.method} {self.http.url}`"
        return [f"- 调用 {target}" if language == "zh" else f"- calls {target}"]


class CheckStep(StepBase):
    kind: Literal["check"]
    shape: ClassVar[tuple[str, str]] = ("[/", "/]")
    probe: Target | None = Field(None, description="What to probe; its result is `result` in `until`.")
    alert_resolved: bool = Field(False, description="Also (or only) hold when the alert that started the incident is resolved.")
    until: str | None = Field(None, description="Condition over `result` that ends the check, e.g. `result.status_code == 200`.")
    interval: Duration = Field(timedelta(seconds=30), description="Time between probes.")
    limit: Duration = Field(description="Give up after this long; the step then fails (see on_failure).")

    def checklist(self, say: Say, language: str) -> list[str]:
        zh = language == "zh"
        what = [f"`{self.until}`"] if self.until else []
        what += ["告警解除" if zh else "the alert is resolved"] if self.alert_resolved else []
        if zh:
            return [f"- 每 {human(self.interval, 'zh')} 检查一次，直到 {' 或 '.join(what)}（最长 {human(self.limit, 'zh')}）"]
        return [f"- checks every {human(self.interval)} until {' or '.join(what)} (at most {human(self.limit)})"]

    @model_validator(mode="after")
    def _has_probe(self) -> "CheckStep":
        if self.probe is None and not self.alert_resolved:
            raise ValueError("a check needs a `probe` or `alert_resolved: true`")
        if self.probe is not None and not self.until:
            raise ValueError("a check with a probe needs `until`, the condition that ends it")
        return self


class Choice(Model):
    value: str
    label: Text


class FormField(Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Answer key: lowercase, digits, underscores.")
    type: Literal["yes_no", "choice", "text", "number", "integer", "datetime"] = Field(description="Kind of answer.")
    label: Text = Field(description="Question or label.")
    choices: list[Choice] | None = Field(None, description="Options, for type choice.")
    default: Any = Field(None, description="Default answer; also what --auto answers.")
    required: bool = Field(True, description="Whether an answer is needed.")

    @model_validator(mode="after")
    def _choices(self) -> "FormField":
        if self.type == "choice" and not self.choices:
            raise ValueError(f"field '{self.id}' is a choice but has no `choices`")
        if self.type != "choice" and self.choices:
            raise ValueError(f"field '{self.id}' has `choices` but is not of type choice")
        if self.id in RESERVED_ANSWER_KEYS:
            raise ValueError(f"field id '{self.id}' is reserved; rename it")
        return self


def said_roles(say: Say, roles: list[str]) -> str:
    """Roles as the checklist names them: by their labels when it can (`say.roles`), else by id."""
    named = getattr(say, "roles", None)
    return named(roles) if named else ", ".join(roles)


FIELD_TYPES_ZH = {"yes_no": "是/否", "choice": "选择", "text": "文本", "number": "数字", "integer": "整数", "datetime": "日期时间"}


class WaitsForPeople(Model):
    """Shared by the kinds that pause the incident until somebody answers."""

    answerers: list[str] = Field(default_factory=list, description="Roles whose people may answer; empty means anyone.")
    escalation: list[Escalation] = Field(default_factory=list, description="Who is paged, and when, while nobody answers.")
    remind_every: Duration | None = Field(None, description="Re-page the current tier this often while nobody answers.")
    expires: Duration | None = Field(None, description="After this long unanswered the step takes its expiry branch.")
    on_expiry: list["Step"] = Field(default_factory=list, description="Steps run when the step expires; the incident then ends as expired unless they say otherwise.")
    continue_on_expiry: bool = Field(False, description="Go on with the runbook after the expiry steps instead of ending it.")

    def waiting_lines(self, language: str, say: Say | None = None) -> list[str]:
        zh = language == "zh"
        who = (lambda roles: said_roles(say, roles)) if say else (lambda roles: ", ".join(roles))
        lines = [("- 回答人：" if zh else "- answered by: ") + who(self.answerers)] if self.answerers else []
        for tier in self.escalation:
            lines.append(f"- 无人回答 {human(tier.after, 'zh')} 后：通知 {who(tier.notify)}" if zh
                         else f"- no answer after {human(tier.after)}: page {who(tier.notify)}")
        if self.remind_every:
            lines.append(f"- 每 {human(self.remind_every, 'zh')} 提醒一次" if zh else f"- reminded every {human(self.remind_every)}")
        if self.expires:
            lines.append(f"- {human(self.expires, 'zh')} 后过期" if zh else f"- expires after {human(self.expires)}")
        return lines


class ManualStep(StepBase, WaitsForPeople):
    kind: Literal["manual"]
    shape: ClassVar[tuple[str, str]] = ("(", ")")
    fields: list[FormField] = Field(default_factory=list, description="What the people record; a form in the Prefect UI.")

    def checklist(self, say: Say, language: str) -> list[str]:
        lines = []
        zh = language == "zh"
        for field in self.fields:
            choices = f" ({' / '.join(say(c.label) for c in field.choices)})" if field.choices else ""
            optional = ("（选填）" if zh else " (optional)") if not field.required else ""
            kind = FIELD_TYPES_ZH[field.type] if zh else field.type
            lines.append(f"- [ ] {say(field.label)}{'：' if zh else ': '}*{kind}*{choices}{optional}")
        return lines + self.waiting_lines(language, say)


class ApprovalStep(StepBase, WaitsForPeople):
    kind: Literal["approval"]
    shape: ClassVar[tuple[str, str]] = ("{{", "}}")

    def checklist(self, say: Say, language: str) -> list[str]:
        return ["- 批准或退回" if language == "zh" else "- approve or reject"] + self.waiting_lines(language, say)

    on_reject: list["Step"] = Field(default_factory=list, description="Steps run when rejected; the incident then ends as rejected unless continue_on_reject.")
    continue_on_reject: bool = Field(False, description="Go on with the runbook after the reject steps.")


class NotifyStep(StepBase, WaitsForPeople):
    kind: Literal["notify"]
    to: list[str] = Field(description="Roles to page.")
    message: Text = Field(description="Message template.")
    ack: bool = Field(False, description="Wait for an acknowledgement, escalating as configured.")
    acts_once: ClassVar[bool] = True
    in_time_rules: ClassVar[bool] = True
    shape: ClassVar[tuple[str, str]] = (">", "]")

    def checklist(self, say: Say, language: str) -> list[str]:
        if language == "zh":
            lines = [f"- 通知：{said_roles(say, self.to)}" + ("（须确认收到）" if self.ack else "")]
        else:
            lines = [f"- notify: {said_roles(say, self.to)}" + (" (acknowledgement required)" if self.ack else "")]
        return lines + [f"  > {line}" for line in say(self.message).splitlines()] + self.waiting_lines(language, say)


class WaitStep(StepBase):
    kind: Literal["wait"]
    acts_once: ClassVar[bool] = True  # a re-run does not wait the time again
    shape: ClassVar[tuple[str, str]] = ("[\\", "\\]")
    duration: Duration = Field(description="How long to wait.")

    def checklist(self, say: Say, language: str) -> list[str]:
        return [f"- 等待 {human(self.duration, 'zh')}" if language == "zh" else f"- waits {human(self.duration)}"]


class Case(Model):
    when: str = Field(description="Condition for this case.")
    steps: list["Step"] = Field(description="Steps of this case.")


class BranchStep(StepBase):
    kind: Literal["branch"]
    shape: ClassVar[tuple[str, str]] = ("{", "}")
    cases: list[Case] = Field(description="First case whose condition holds runs.")
    otherwise: list["Step"] = Field(default_factory=list, description="Steps when no case holds.")


class Track(Model):
    id: str = Field(pattern=ID_PATTERN, description="Track id.")
    title: Text
    role: str | None = Field(None, description="Role responsible for the track.")
    after: list[str] = Field(default_factory=list, description="Tracks that must finish first.")
    when: str | None = Field(None, description="Condition, checked when the track would start (after the tracks it waits for): the track is skipped when it is false.")
    note: Text | None = Field(None, description=NOTE_DOC)
    steps: list["Step"]


class ParallelStep(StepBase):
    kind: Literal["parallel"]
    shape: ClassVar[tuple[str, str]] = ("[", "]")
    tracks: list[Track] = Field(min_length=1, description="Tracks run side by side, each as its own child flow run.")


class RepeatStep(StepBase):
    """Recurring work: its steps run again and again (stage reports while the incident is handled, readings
    taken throughout) until a condition holds, the incident closes, or `max_count` runs are done.

    Each run is an iteration: its steps run under the ids `<id>--1`, `<id>--2`... (task runs, forms, cache keys
    and results stay apart), and the latest iteration's result is also kept under the plain id, so templates and
    deadlines read `steps.ID` as the most recent one. Put a repeat in a parallel track to keep it beside the main line.
    """

    kind: Literal["repeat"]
    shape: ClassVar[tuple[str, str]] = ("[/", "\\]")
    steps: list["Step"] = Field(min_length=1, description="Steps of one iteration.")
    every: Duration | None = Field(None, description="Time between the end of one iteration and the start of the next (scaled in drills); none: at once.")
    until: str | None = Field(None, description="Condition that ends the repeat, checked after each iteration (the first always runs) and while waiting between them; it may name any step of the runbook (e.g. one in another track that closes the incident).")
    max_count: int = Field(20, ge=1, le=500, description="Most iterations; the repeat then ends as done.")

    def checklist(self, say: Say, language: str) -> list[str]:
        if language == "zh":
            every = f"每 {human(self.every, 'zh')} 一次" if self.every else "连续"
            until = f"，直到 `{self.until}`" if self.until else ""
            return [f"- 重复执行（{every}{until}，最多 {self.max_count} 次；事件结束即停止）："]
        every = f"every {human(self.every)}" if self.every else "back to back"
        until = f", until `{self.until}`" if self.until else ""
        return [f"- repeated ({every}{until}, at most {self.max_count} times; stops when the incident closes):"]


class ReportStep(StepBase):
    """A report the plan requires, drafted from what the incident has recorded so far.

    The draft is published on the run as a Markdown artifact and kept under the
    step id (`steps.ID.document`), so an approval step can route it and a notify
    step can send it.
    """

    kind: Literal["report"]
    document: Text = Field(description="Markdown template of the report: headings and the recorded answers that fill them.")
    to: list[str] = Field(default_factory=list, description="Roles the report is sent to once drafted (leave empty and use an approval then a notify step to route it first).")
    acts_once: ClassVar[bool] = True
    shape: ClassVar[tuple[str, str]] = ("[", "]")

    def checklist(self, say: Say, language: str) -> list[str]:
        if language == "zh":
            lines = ["- 根据已记录的内容起草报告" + (f"，发送给 {said_roles(say, self.to)}" if self.to else "")]
        else:
            lines = ["- drafts a report from what was recorded" + (f", sent to {said_roles(say, self.to)}" if self.to else "")]
        return lines + [f"  > {line}" for line in say(self.document).splitlines()]


class GradeStep(StepBase):
    kind: Literal["grade"]
    shape: ClassVar[tuple[str, str]] = ("{{", "}}")


class EndStep(StepBase):
    kind: Literal["end"]
    shape: ClassVar[tuple[str, str]] = ("((", "))")
    outcome: Literal["resolved", "failed"] = Field("resolved", description="resolved completes the run; failed fails it.")


STEP_KINDS = (ActionStep, CheckStep, ManualStep, ApprovalStep, NotifyStep, WaitStep, BranchStep, ParallelStep, RepeatStep, GradeStep, ReportStep, EndStep)
Step = Annotated[Union[STEP_KINDS], Field(discriminator="kind")]  # type: ignore[valid-type]


def iteration_of(step: StepBase, n: int) -> StepBase:
    """The step as it runs in the n-th iteration of a repeat: it and every step it holds under `<id>--<n>`."""
    copy = step.model_copy(deep=True)
    for child in [c for c, _ in _walk_steps([copy], "")]:
        child.id = f"{child.id}{ITERATION_MARK}{n}"
        for track in getattr(child, "tracks", []) or []:
            track.id = f"{track.id}{ITERATION_MARK}{n}"
            track.after = [f"{dep}{ITERATION_MARK}{n}" for dep in track.after]
    return copy


def step_ids(step: StepBase) -> list[str]:
    """The ids of a step and of every step it holds, in document order."""
    return [s.id for s, _ in _walk_steps([step], "")]


def step_kind(cls: type[StepBase]) -> str:
    """The `kind:` tag of a step class."""
    return cls.model_fields["kind"].annotation.__args__[0]


KINDS: dict[str, type[StepBase]] = {step_kind(cls): cls for cls in STEP_KINDS}


START_DOC = ("When the clock starts: 'incident' (run start), 'param:NAME' (a datetime parameter, e.g. the time of the fault), "
             "'step:ID' (when that step finished) or 'holds:CONDITION' (the moment the condition is first seen to hold, "
             "e.g. `holds:steps.triage.network_wide`). A clock that has not started yet never fires.")


class Threshold(Model):
    id: str = Field(pattern=ID_PATTERN)
    title: Text
    after: Duration = Field(description="Time after `start` at which it fires, if the incident is still open.")
    start: str = Field("incident", description=START_DOC)
    note: Text | None = Field(None, description=NOTE_DOC)
    when: str | None = Field(None, description="Condition (e.g. only for class 1): once due, the threshold fires as soon as it holds, until `until_step` is done.")
    until_step: str | None = Field(None, description="Once this step has finished (e.g. service restored) the threshold no longer fires.")
    steps: list["Step"] = Field(description="Steps run when it fires: notify and action only (they run beside the main line).")


class Deadline(Model):
    id: str = Field(pattern=ID_PATTERN)
    title: Text
    within: Duration | None = Field(None, description="Time allowed (give exactly one of within, working_days, calendar_days).")
    working_days: int | None = Field(None, ge=1, description="Instead of `within`: until the end of the N-th Chinese working day after the start (holidays and adjusted weekends counted).")
    calendar_days: int | None = Field(None, ge=0, description="Instead of `within`: until the end of the N-th calendar day after the start, China time (0: the same day, \"当日\"; 1: the next day, \"第二天\").")
    start: str = Field("incident", description=START_DOC)
    note: Text | None = Field(None, description=NOTE_DOC)
    met_by: str = Field(description="Step whose completion meets the deadline.")
    when: str | None = Field(None, description="Condition: the deadline applies only when it holds (e.g. only for class 1); checked when due and at the close.")
    on_miss: list["Step"] = Field(default_factory=list, description="Steps run when it passes unmet: notify and action only.")


class Runbook(Model):
    id: str = Field(pattern=ID_PATTERN, description="Runbook id; also the Prefect flow name.")
    title: Text
    description: Text
    source: Source
    version: int = Field(1, description="Bump when the plan changes.")
    tags: list[str] = Field(default_factory=list)
    concurrency_limit: int = Field(5, ge=1, description="Incidents of this runbook running at once; more wait their turn (an alert storm must not start a hundred copies of a plan that touches one firewall).")
    parameters: dict[str, Parameter] = Field(default_factory=dict, description="Typed inputs of an incident (site, system, reporter...).")
    severity: Severity | None = None
    roles: dict[str, Role] = Field(description="Roles the plan names; resolved to people by the contacts directory.")
    lead: str = Field(description="Role that leads the incident; failures are escalated to it.")
    steps: list[Step] = Field(min_length=1)
    thresholds: list[Threshold] = Field(default_factory=list, description="Rules that fire while the incident is open (the hospital's 30 min / 6 h / 24 h).")
    deadlines: list[Deadline] = Field(default_factory=list, description="Things that must be done by a time (the initial report within 1 hour).")

    @model_validator(mode="after")
    def _consistent(self) -> "Runbook":
        problems = check_runbook(self)
        if problems:
            raise problems[0]
        return self

    def all_steps(self) -> list[tuple[StepBase, str]]:
        """Every step in document order, with where it stands ('steps', 'threshold X', 'track Y')."""
        return list(_walk(self))

    def step(self, step_id: str) -> StepBase:
        """The step with this id; `ID--n` (an iteration of a repeated step) is that step under the iteration's id."""
        for s, _ in _walk(self):
            if s.id == step_id:
                return s
        base, mark, n = step_id.rpartition(ITERATION_MARK)
        if mark and n.isdigit():
            return iteration_of(self.step(base), int(n))
        raise KeyError(step_id)

    def level(self, level_id: str) -> Level | None:
        if self.severity is None:
            return None
        return next((lv for lv in self.severity.levels if lv.id == level_id), None)


# ---------------------------------------------------------------- cross-field checks


class RunbookProblem(ValueError):
    """One thing wrong with a runbook: which step, what, and how to fix it."""

    def __init__(self, step: str | None, message: str, fix: str):
        self.step, self.message, self.fix = step, message, fix
        where = f"step '{step}': " if step else ""
        super().__init__(f"{where}{message}. Fix: {fix}")


def _children(step: Any) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []
    for name in ("on_expiry", "on_reject", "otherwise"):
        for child in getattr(step, name, []) or []:
            out.append((child, f"{step.id}.{name}"))
    for case in getattr(step, "cases", []) or []:
        out += [(c, f"{step.id}.case") for c in case.steps]
    for track in getattr(step, "tracks", []) or []:
        out += [(c, f"track {track.id}") for c in track.steps]
    if step.kind == "repeat":
        out += [(c, f"repeat {step.id}") for c in step.steps]
    return out


def _walk_steps(steps: list[Any], where: str):
    for step in steps:
        yield step, where
        for child, child_where in _children(step):
            yield from _walk_steps([child], child_where)


def _walk(rb: Runbook):
    yield from _walk_steps(rb.steps, "steps")
    for th in rb.thresholds:
        yield from _walk_steps(th.steps, f"threshold {th.id}")
    for dl in rb.deadlines:
        yield from _walk_steps(dl.on_miss, f"deadline {dl.id}")


def _roles_of(step: Any) -> list[str]:
    roles = [step.role] if step.role else []
    roles += getattr(step, "answerers", []) or []
    roles += getattr(step, "to", []) or []
    for tier in getattr(step, "escalation", []) or []:
        roles += tier.notify
    for track in getattr(step, "tracks", []) or []:
        roles += [track.role] if track.role else []
    return roles


def _templates_of(step: Any) -> list[tuple[str, str]]:
    texts: list[Text] = [t for t in (step.title, step.instructions, getattr(step, "message", None), getattr(step, "document", None)) if t is not None]
    texts += [tier.message for tier in getattr(step, "escalation", []) or [] if tier.message]
    out = [(f"{lang}", getattr(t, lang)) for t in texts for lang in ("zh", "en")]
    http = getattr(step, "http", None) or getattr(getattr(step, "probe", None), "http", None)
    if http is not None:
        out.append(("http.url", http.url))
    return out


def _conditions_of(step: Any) -> list[tuple[str, str]]:
    out = [("when", step.when)] if step.when else []
    out += [("cases.when", c.when) for c in getattr(step, "cases", []) or []]
    if getattr(step, "until", None) and step.kind != "repeat":  # a repeat's `until` may name any step (checked apart)
        out.append(("until", step.until))
    return out


def check_runbook(rb: Runbook) -> list[RunbookProblem]:
    """Every cross-field rule of the language, in one place."""
    problems: list[RunbookProblem] = []
    seen: dict[str, str] = {}
    order: dict[str, int] = {}
    for index, (step, where) in enumerate(_walk(rb)):
        if step.id in seen:
            problems.append(RunbookProblem(step.id, f"the id is used twice (in {seen[step.id]} and in {where})", "give each step its own id"))
        if ITERATION_MARK in step.id:
            problems.append(RunbookProblem(step.id, f"'{ITERATION_MARK}' in a step id is kept for the iterations of a repeat", f"use single dashes, e.g. '{step.id.replace(ITERATION_MARK, '-')}'"))
        seen.setdefault(step.id, where)
        order.setdefault(step.id, index)
    for th in rb.thresholds:
        if th.id in seen:
            problems.append(RunbookProblem(th.id, "a threshold has the same id as a step", "rename the threshold"))
    for dl in rb.deadlines:
        if dl.id in seen:
            problems.append(RunbookProblem(dl.id, "a deadline has the same id as a step", "rename the deadline"))

    if rb.lead not in rb.roles:
        problems.append(RunbookProblem(None, f"lead role '{rb.lead}' is not declared under roles", f"add '{rb.lead}' to roles or pick one of: {', '.join(rb.roles)}"))

    levels = [lv.id for lv in rb.severity.levels] if rb.severity else []
    if rb.severity:
        if rb.severity.default not in levels:
            problems.append(RunbookProblem(None, f"severity default '{rb.severity.default}' is not a level", f"use one of: {', '.join(levels)}"))
        for rule in rb.severity.rules:
            if rule.level not in levels:
                problems.append(RunbookProblem(None, f"grading rule gives unknown level '{rule.level}'", f"use one of: {', '.join(levels)}"))
            problems += _check_condition(rb, None, "severity rule", rule.when, seen, order, None)

    for step, where in _walk(rb):
        for role in _roles_of(step):
            if role not in rb.roles:
                problems.append(RunbookProblem(step.id, f"role '{role}' is not declared under roles", f"add '{role}' to roles or use one of: {', '.join(rb.roles)}"))
        for name, template in _templates_of(step):
            try:
                check_template(template)
            except ExpressionError as exc:
                problems.append(RunbookProblem(step.id, f"the {name} template does not compile: {exc}", "fix the Jinja syntax ({{ ... }}, {% ... %})"))
        for name, cond in _conditions_of(step):
            problems += _check_condition(rb, step.id, name, cond, seen, order, order.get(step.id))
        if step.kind == "grade" and rb.severity is None:
            problems.append(RunbookProblem(step.id, "a grade step needs the runbook to declare `severity`", "add severity levels and rules, or remove the step"))
        if step.kind == "parallel":
            problems += _check_tracks(step)
        for track in getattr(step, "tracks", []) or []:
            if track.when:  # may read the steps of the tracks before it, which come later than the parallel step itself
                first = order.get(track.steps[0].id) if track.steps else None
                problems += _check_condition(rb, step.id, f"track '{track.id}' when", track.when, seen, order, first)
        if step.kind == "repeat" and step.until:
            problems += _check_condition(rb, step.id, "until", step.until, seen, order, None)
        if step.kind == "repeat" and step.until is None and step.max_count > 50:
            problems.append(RunbookProblem(step.id, "a repeat without `until` runs up to max_count times", "add `until: <condition>` or lower max_count to 50 or less"))
        for name, template in _templates_of(step):
            for ref in referenced_steps(template):
                if ref not in seen:
                    problems.append(RunbookProblem(step.id, f"a template refers to step '{ref}', which does not exist", f"use an existing step id; known ids: {', '.join(list(seen)[:12])}"))
        if where.startswith(("threshold", "deadline")) and not step.in_time_rules:
            allowed = " or ".join(kind for kind, cls in KINDS.items() if cls.in_time_rules)
            problems.append(RunbookProblem(step.id, f"a {step.kind} step cannot run inside a {where.split()[0]} (it runs beside the main line and cannot pause it)", f"use {allowed} steps there; put people's work in the main steps"))
        if where.startswith(("threshold", "deadline")) and getattr(step, "ack", False):
            problems.append(RunbookProblem(step.id, "a notify step inside a time rule cannot wait for acknowledgement", "remove `ack: true` or move the step to the main line"))

    for rule in [*rb.thresholds, *rb.deadlines]:
        problems += _check_time_rule(rb, rule, seen)
    return problems


def _check_condition(rb, step_id, name, cond, seen, order, position) -> list[RunbookProblem]:
    try:
        check_expression(cond)
    except ExpressionError as exc:
        return [RunbookProblem(step_id, f"the {name} condition '{cond}' does not compile: {exc}", "write a Jinja expression such as `params.scope == 'inside'`")]
    problems = []
    for ref in referenced_steps(cond):
        if ref not in seen:
            problems.append(RunbookProblem(step_id, f"the {name} condition refers to step '{ref}', which does not exist", f"use the id of an earlier step; known ids: {', '.join(list(seen)[:12])}"))
        elif position is not None and order[ref] >= position and ref != step_id:
            problems.append(RunbookProblem(step_id, f"the {name} condition uses step '{ref}', which comes later", f"move '{ref}' before '{step_id}' or drop the reference"))
    return problems


def _check_tracks(step: ParallelStep) -> list[RunbookProblem]:
    ids = [t.id for t in step.tracks]
    problems = []
    if len(set(ids)) != len(ids):
        problems.append(RunbookProblem(step.id, "two tracks share an id", "give each track its own id"))
    graph = {t.id: t.after for t in step.tracks}
    for track in step.tracks:
        for dep in track.after:
            if dep not in graph:
                problems.append(RunbookProblem(step.id, f"track '{track.id}' waits for unknown track '{dep}'", f"use one of: {', '.join(ids)}"))
    cycle = _find_cycle(graph)
    if cycle:
        problems.append(RunbookProblem(step.id, f"tracks wait for each other in a cycle: {' -> '.join(cycle)}", "remove one of those `after` entries"))
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in graph:
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def _check_time_rule(rb: Runbook, rule: Threshold | Deadline, seen: dict[str, str]) -> list[RunbookProblem]:
    problems = []
    if isinstance(rule, Deadline) and [rule.within, rule.working_days, rule.calendar_days].count(None) != 2:
        return [RunbookProblem(rule.id, "a deadline needs exactly one of `within`, `working_days` and `calendar_days`",
                               "keep one of `within: 1h`, `working_days: 5` or `calendar_days: 1`")]
    span = rule.after if isinstance(rule, Threshold) else rule.within
    if span is not None and span.total_seconds() <= 0:
        problems.append(RunbookProblem(rule.id, "the time rule has no positive duration", "set `after`/`within` to a positive duration such as 30m"))
    start = rule.start
    if start.startswith("param:"):
        name = start[6:]
        param = rb.parameters.get(name)
        if param is None or param.type != "datetime":
            problems.append(RunbookProblem(rule.id, f"start '{start}' needs a datetime parameter '{name}'", f"declare parameters.{name} with type: datetime, or start from 'incident'"))
    elif start.startswith("step:"):
        if start[5:] not in seen:
            problems.append(RunbookProblem(rule.id, f"start '{start}' names a step that does not exist", "use 'step:' with an existing step id"))
    elif start.startswith("holds:"):
        problems += _check_condition(rb, rule.id, "start", start[6:].strip(), seen, {}, None)
    elif start != "incident":
        problems.append(RunbookProblem(rule.id, f"start '{start}' is not understood", "use 'incident', 'param:NAME', 'step:ID' or 'holds:CONDITION'"))
    if isinstance(rule, Deadline) and rule.met_by not in seen:
        problems.append(RunbookProblem(rule.id, f"met_by '{rule.met_by}' is not a step", "name the step whose completion meets the deadline"))
    if isinstance(rule, Threshold) and rule.until_step and rule.until_step not in seen:
        problems.append(RunbookProblem(rule.id, f"until_step '{rule.until_step}' is not a step", "name the step that ends the threshold (e.g. the one confirming recovery)"))
    if rule.when:
        problems += _check_condition(rb, rule.id, "when", rule.when, seen, {}, None)
    return problems


for _model in [m for m in list(globals().values()) if isinstance(m, type) and issubclass(m, Model)]:
    _model.model_rebuild()  # every model that refers to `Step` before the union exists
