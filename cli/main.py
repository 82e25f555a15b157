"""`runbook`: list, read, check, run and answer the emergency runbooks.

Commands that talk to Prefect first find its server (flows/server.py): PREFECT_API_URL
when set, else the stack a `runbook up` recorded, else `runbook up`'s default address.
When none answers they stop and say how to start or point at one, instead of letting
Prefect start a temporary server of its own that nobody else would ever see.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.markup import escape
from prefect import tags
from prefect.exceptions import ObjectNotFound

from app.server import run_intake
from app.stack import Stack
from app.worker import worker_command
from cli.output import Col, console, elapsed, err, print_json, print_table, span
from flows.answers import RunIdError, answer_step, pending_steps, resolve_run_id
from flows.launch import deployment_name, start_incident
from flows.record.archive import all_records, archive_dir, find_record
from flows.record.report import FORMATS, NoSuchIncident, build_report, load_report, render
from flows.recovery import NotRecoverable, recover_run
from flows.server import find_server, use_server
from integrations.alerts.routing import RoutesError, check_routes, load_routes
from integrations.contacts import load_directory
from integrations.localtime import local_time, site_zone
from runbooks.checklist import checklist
from runbooks.docs import check_docs, render_docs
from runbooks.loader import RunbookError, load_all, load_file, runbook_files
from runbooks.model import Runbook, plans_served
from runbooks.settings import get_settings
from runbooks.yamlfile import read_yaml

app = typer.Typer(help="Emergency response plans (应急预案) as Prefect flows.", no_args_is_help=True, add_completion=False)


def connect(*, required: bool = True) -> bool:
    """Point Prefect at the running server; without one, stop (exit 1) saying how to start or name one.

    Not required (`runbook run`): with nothing set and nothing found, Prefect runs the flow on a
    temporary server of its own, as it always does, and we say so."""
    lookup = find_server()
    if lookup.found:
        use_server(lookup.api_url)
        return True
    if required or lookup.source == "PREFECT_API_URL":
        err.print(lookup.explain(), markup=False, highlight=False)
        raise typer.Exit(1)
    err.print("no Prefect server found (`runbook up` starts one): this run uses a temporary server of Prefect's own, "
              "gone when it ends", markup=False)
    return False


def _load():
    settings = get_settings()
    return load_all(settings.runbooks_dir, load_directory(settings.contacts_file))


def _one(runbook_id: str) -> Runbook:
    runbooks, errors = _load()
    if runbook_id not in runbooks:
        broken = [e for e in errors if Path(e.file).stem == runbook_id]
        if broken:
            err.print(f"[red]runbook {runbook_id} does not load:[/red]")
            for e in broken:
                err.print(str(e), markup=False)
        else:
            err.print(f"[red]no runbook '{runbook_id}'[/red]; known: {', '.join(sorted(runbooks))}")
        raise typer.Exit(2)
    return runbooks[runbook_id]


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            err.print(f"[red]{what} '{item}' is not of the form key=value[/red]")
            raise typer.Exit(2)
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _clock(text: str | None, drill: bool) -> datetime | None:
    """--clock: a drill's start on the plan's clock (a real incident runs on the real one)."""
    from tasks.incident import plan_clock  # tasks import Prefect's client: only the commands that start a run pay for it

    if text is not None and not drill:
        err.print("[red]--clock is for drills[/red]: a real incident's deadlines run on the real calendar; add --drill")
        raise typer.Exit(2)
    try:
        return plan_clock(text)
    except ValueError:
        err.print(f"[red]--clock '{text}' is not a time[/red]: give ISO 8601, e.g. 2026-11-30T09:00 (China time) "
                  "or 2026-11-30T01:00Z")
        raise typer.Exit(2)


def _answers_file(path: Path | None) -> dict | None:
    """Scripted answers by step id (YAML or JSON)."""
    if path is None:
        return None
    try:
        scripted = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[red]cannot read answers from {path}:[/red] {escape(str(exc))}")
        raise typer.Exit(2)
    if not isinstance(scripted, dict):
        err.print(f"[red]{path} must map step ids to answers[/red] (step-id: {{field: value}})")
        raise typer.Exit(2)
    return scripted


def _run_id(text: str) -> str:
    """The whole run id a (possibly shortened) id names; exits listing the candidates when it names several."""
    try:
        return resolve_run_id(text)
    except RunIdError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        for candidate in exc.candidates:
            err.print(f"  {candidate}", highlight=False)
        if exc.candidates:
            err.print("give more of the id")
        raise typer.Exit(1)


@app.command("list")
def list_runbooks(as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts).")) -> None:
    """Every runbook: id, title, source plan, steps."""
    runbooks, errors = _load()
    ordered = sorted(runbooks.values(), key=lambda r: r.source.plan)
    if errors:
        err.print(f"[yellow]{len(errors)} problem(s) keep some runbooks out; run `runbook lint`[/yellow]")
    if as_json:
        print_json([{"id": rb.id, "title": {"zh": rb.title.zh, "en": rb.title.en}, "plans": plans_served(rb.source),
                     "steps": len(rb.all_steps()),
                     "levels": [{"id": lv.id, "zh": lv.label.zh, "en": lv.label.en} for lv in rb.severity.levels] if rb.severity else []}
                    for rb in ordered])
        return
    rows = [[rb.id, f"{rb.title.zh}\n{rb.title.en}", ", ".join(map(str, plans_served(rb.source))), str(len(rb.all_steps())),
             ", ".join(lv.id for lv in rb.severity.levels) if rb.severity else "—"] for rb in ordered]
    print_table([Col("id", whole=True), Col("标题 / title"), Col("plan"), Col("steps"), Col("levels")], rows)
    plans = sorted({p for rb in ordered for p in plans_served(rb.source)})
    console.print(f"{len(runbooks)} runbooks covering plans {', '.join(map(str, plans))}")


@app.command()
def show(
    runbook_id: str,
    language: str = typer.Option("both", help="zh, en or both"),
    as_json: bool = typer.Option(False, "--json", help="The runbook as one JSON document (as the language defines it)."),
) -> None:
    """The runbook as a readable checklist."""
    rb = _one(runbook_id)
    if as_json:
        print_json(rb.model_dump(mode="json"))
        return
    typer.echo(checklist(rb, language=language))


@app.command()
def lint(paths: list[Path] = typer.Argument(None, help="Runbook files or folders; default: the runbooks folder.")) -> None:
    """Validate runbooks; exit non-zero on any error, naming file, step and fix."""
    settings = get_settings()
    directory = load_directory(settings.contacts_file)
    files: list[Path] = []
    for p in paths or [settings.runbooks_dir]:
        files += runbook_files(p) if p.is_dir() else [p]
    bad = 0
    for path in files:
        try:
            load_file(path, directory)
            typer.echo(f"ok   {path}")
        except RunbookError as exc:
            bad += 1
            for e in exc.errors:
                typer.echo(f"FAIL {e}")
    typer.echo(f"{len(files) - bad} ok, {bad} failed")
    if not paths:  # the site's own runbooks: its routes must start them too
        try:
            problems = check_routes(load_routes(settings.routes_file), settings.runbooks_dir)
        except RoutesError as exc:
            problems = [str(exc)]
        for problem in problems:
            typer.echo(f"FAIL {problem}")
        typer.echo(f"routes: {settings.routes_file}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        bad += len(problems)
    if bad or not files:
        raise typer.Exit(1)


@app.command()
def run(
    runbook_id: str,
    param: list[str] = typer.Option([], "--param", "-p", help="Runbook parameter, key=value."),
    answers: Optional[Path] = typer.Option(None, help="YAML or JSON file of answers by step id."),
    severity: Optional[str] = typer.Option(None, help="Set the severity level by hand."),
    drill: bool = typer.Option(False, help="Mark the run and everything it sends as a drill."),
    time_scale: float = typer.Option(1.0, help="Divide every wait, timer, threshold and deadline by this."),
    clock: Optional[str] = typer.Option(None, help="Play the plan's clock from this time (ISO, China time if no zone), "
                                         "so a same-day or working-day deadline falls as it would then."),
    auto: bool = typer.Option(False, help="Answer every manual step with its default; approve as 'drill'."),
    incident: Optional[str] = typer.Option(None, help="A label for the incident, shown in the run name."),
) -> None:
    """Run a runbook here and now; prints the flow run id and the outcome (exit 0 only if completed)."""
    rb = _one(runbook_id)
    scripted = _answers_file(answers)
    plan_start = _clock(clock, drill)
    connect(required=False)
    from flows.catalog import FLOWS  # compiles every runbook into a flow: only the command that runs one pays for it

    def announce(flow, flow_run, state) -> None:
        console.print(f"flow run {flow_run.id} ({flow_run.name})")

    flow = FLOWS[rb.id].with_options(on_running=[announce])
    with tags(f"runbook:{rb.id}", *(["drill"] if drill else [])):
        state = flow(parameters=_pairs(param, "parameter"), severity=severity, drill=drill, time_scale=time_scale,
                     auto=auto, answers=scripted, incident=incident, clock=plan_start, return_state=True)
    colour = "green" if state.is_completed() and state.name == "Completed" else "red"
    console.print(f"outcome: [{colour}]{state.name}[/{colour}] — {state.message}")
    if colour != "green":
        raise typer.Exit(1)


@app.command()
def pending(as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts).")) -> None:
    """Steps waiting for an answer, by incident: step, what, how long, who may answer."""
    connect()
    steps = pending_steps()
    if as_json:
        print_json([{**s.model_dump(mode="json"), "in_track": s.in_track} for s in steps])
        return
    now = datetime.now(timezone.utc)
    incidents: dict[str, list] = {}
    for s in steps:
        incidents.setdefault(s.incident_id, []).append(s)
    for incident_id, waiting in incidents.items():
        console.print(f"[bold]{escape(waiting[0].runbook)}[/bold] · incident [bold]{incident_id}[/bold]", soft_wrap=True)
        console.print(f"  {escape(waiting[0].incident_name)}", soft_wrap=True)
        # the incident's id answers any of its steps (--step when several wait), also those in parallel tracks
        rows = [[s.step, s.title + ("\n(in a parallel track)" if s.in_track else ""), elapsed(s.since, now),
                 ", ".join(s.may_answer) or "anyone"] for s in waiting]
        print_table([Col("step", whole=True), Col("what"), Col("waiting"), Col("may answer")], rows)
    console.print(f"{len(steps)} step(s) waiting in {len(incidents)} incident(s)")
    if steps:
        console.print("answer: runbook answer INCIDENT_ID [--step STEP] --by NAME field=value  "
                      "(a unique start of the id is enough)", markup=False, soft_wrap=True)


@app.command()
def answer(
    run_id: str = typer.Argument(..., help="The incident's or the waiting run's id, or a unique start of it."),
    values: list[str] = typer.Argument(None, help="Answers, key=value (booleans: yes/no)."),
    step: Optional[str] = typer.Option(None, help="The step you mean to answer (refused if the run waits elsewhere)."),
    by: str = typer.Option(..., "--by", help="Who answers: person id or name from the contacts directory."),
) -> None:
    """Answer the step a run is waiting at, through the same resume API the UI uses."""
    pairs = _pairs(values or [], "answer")
    connect()
    result = answer_step(run_id, by=by, values=pairs, step=step)
    if result.ok:
        console.print(f"[green]{escape(result.message)}[/green]", soft_wrap=True)
        return
    err.print(f"[red]{escape(result.message)}[/red]")
    for w in result.candidates:
        err.print(f"  --step {w.step}   (run {w.flow_run_id})", highlight=False)
    if result.candidates:
        err.print("pass --step STEP to say which one you answer")
    raise typer.Exit(1)


@app.command()
def fire(
    runbook_id: str,
    param: list[str] = typer.Option([], "--param", "-p", help="Runbook parameter, key=value."),
    severity: Optional[str] = typer.Option(None, help="Severity level."),
    drill: bool = typer.Option(False, help="A drill."),
    incident: Optional[str] = typer.Option(None, help="Incident label; the same label does not start a second run."),
    answers: Optional[Path] = typer.Option(None, help="YAML or JSON file of answers by step id."),
    time_scale: float = typer.Option(1.0, help="Divide every wait, timer, threshold and deadline by this."),
    clock: Optional[str] = typer.Option(None, help="Play the plan's clock from this time (ISO, China time if no zone), "
                                         "so a same-day or working-day deadline falls as it would then."),
    auto: bool = typer.Option(False, help="Answer every manual step with its default; approve as 'drill'."),
) -> None:
    """Start an incident on the Prefect server's deployment of the runbook (any stack: `runbook up`, or production)."""
    rb = _one(runbook_id)
    parameters = _pairs(param, "parameter")
    scripted = _answers_file(answers)
    plan_start = _clock(clock, drill)
    connect()
    key = f"manual:{rb.id}:{incident}" if incident else None
    try:
        started = start_incident(rb.id, parameters, severity=severity, drill=drill, idempotency_key=key, incident=incident,
                                 time_scale=time_scale, auto=auto, answers=scripted, clock=plan_start)
    except ObjectNotFound:
        err.print(f"[red]the server has no deployment {deployment_name(rb.id)}[/red]: deploy the runbooks there "
                  "(`prefect deploy --all`, docs/production.md) or serve them (`runbook up`)")
        raise typer.Exit(1)
    console.print(f"started flow run {started.id} ({escape(started.name)})", soft_wrap=True)


@app.command()
def up(
    host: str = typer.Option("127.0.0.1", help="Address of the Prefect server and UI."),
    port: int = typer.Option(4200, help="Port of the Prefect server and UI."),
    intake_port: int = typer.Option(8787, help="Port of the alert intake (0: no intake)."),
) -> None:
    """Start the Prefect server (SQLite), serve every runbook and the alert intake; Ctrl-C stops it all."""
    runbooks, errors = _load()
    if errors:
        err.print(f"[yellow]{len(errors)} problem(s) keep some runbooks out; run `runbook lint`[/yellow]")
    stack = Stack(host=host, port=port, intake_port=intake_port or None)
    console.print(f"starting Prefect server on {stack.ui_url} ...")
    try:
        stack.start()
    except (RuntimeError, KeyboardInterrupt) as exc:  # what started must not outlive a start that failed
        stack.stop()
        err.print(f"[red]{escape(str(exc)) or 'interrupted'}[/red]")
        raise typer.Exit(1)
    console.print(f"[bold green]ready[/bold green]: UI {stack.ui_url} · {len(runbooks)} runbooks served"
                  + (f" · alert intake http://{host}:{intake_port}/alerts/..." if intake_port else "") + " · Ctrl-C stops")
    raise typer.Exit(stack.wait())


@app.command()
def intake(host: Optional[str] = typer.Option(None), port: Optional[int] = typer.Option(None)) -> None:
    """Run the alert receiver alone (it spools alerts while Prefect is unreachable)."""
    settings = get_settings()
    lookup = find_server()
    if lookup.found:
        use_server(lookup.api_url)
    else:
        err.print(lookup.explain() + "\nalerts are spooled until it is reachable", markup=False)
    run_intake(host or settings.intake_host, port or settings.intake_port)


@app.command()
def worker(
    pool: str = typer.Option("runbooks", help="Work pool to take incidents from (created with type `runbook` if missing)."),
    name: Optional[str] = typer.Option(None, help="Worker name shown in the UI (default: Prefect's)."),
    limit: Optional[int] = typer.Option(None, help="Most incidents this worker runs at once."),
) -> None:
    """Run a worker for production: `prefect worker start --type runbook`, each incident started warm."""
    lookup = find_server()
    if not lookup.found:
        err.print(lookup.explain(), markup=False)
        raise typer.Exit(1)
    command = worker_command(pool, name=name, limit=limit)
    os.execvpe(command[0], command, {**os.environ, "PREFECT_API_URL": lookup.api_url})


@app.command()
def docs(
    out: Path = typer.Option(Path("docs/runbooks"), help="Folder to write the runbook documents into."),
    check: bool = typer.Option(False, help="Only check that the committed documents match the runbooks."),
) -> None:
    """Render every runbook as a Markdown document with a flow diagram into docs/runbooks/."""
    runbooks, errors = _load()
    if errors:
        err.print("[red]some runbooks do not load; run `runbook lint` first[/red]")
        raise typer.Exit(1)
    if check:
        stale = check_docs(runbooks, out)
        for name in stale:
            err.print(f"out of date: {name}")
        if stale:
            err.print("run `runbook docs` and commit the result")
            raise typer.Exit(1)
        console.print(f"{len(runbooks)} runbook documents are up to date")
        return
    written = render_docs(runbooks, out)
    console.print(f"wrote {len(written)} files to {out}")


@app.command()
def schema() -> None:
    """The runbook language's JSON schema (every field with its description)."""
    print_json(Runbook.model_json_schema())


@app.command()
def report(
    run_id: str,
    format: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of printing."),
) -> None:
    """The post-incident report of a run: from the archive (survives the run's deletion), else from Prefect."""
    if format not in FORMATS:
        err.print(f"[red]unknown format '{format}'[/red]; one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if find_record(run_id) is None:
        connect()  # not archived (yet): Prefect has it, if anyone does
        run_id = _run_id(run_id)
    try:
        text = render(load_report(run_id), format)
    except NoSuchIncident as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        typer.echo(text)


@app.command()
def history(
    runbook_id: Optional[str] = typer.Option(None, "--runbook", help="Only this runbook."),
    since: Optional[str] = typer.Option(None, help="Only incidents started on or after this date (YYYY-MM-DD, in the site's time zone)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts)."),
) -> None:
    """Archived incidents: runbook, severity, start, duration, outcome and missed deadlines."""
    try:
        start = datetime.combine(date.fromisoformat(since), datetime.min.time(), tzinfo=site_zone()) if since else None
    except ValueError:
        err.print(f"[red]--since '{since}' is not a date like 2026-10-01[/red]")
        raise typer.Exit(2)
    folder = archive_dir().resolve()
    records = all_records()
    if not records:
        err.print(f"no incidents archived in {folder}" + ("" if folder.is_dir() else " (no such folder)") + "\n"
                  "the archive is RUNBOOK_INCIDENTS_DIR (or incidents_dir in runbook.toml), by default `incidents/` "
                  "in the folder the command runs in; set it to where the stack archives", markup=False, highlight=False)
    rows = []
    for record in records:
        if (runbook_id and record.runbook != runbook_id) or (start and record.started < start):
            continue
        r = build_report(record)
        rows.append({"flow_run_id": r.flow_run_id, "runbook": r.runbook, "drill": r.drill, "severity": r.severity,
                     "severity_label": r.severity_label, "started": r.started.isoformat(timespec="seconds"),
                     "duration_seconds": round(r.duration_seconds, 1), "duration": span(r.duration_seconds), "outcome": r.outcome,
                     "missed_deadlines": [f"{d.id} ({d.state})" for d in r.missed_deadlines()]})
    if as_json:
        print_json(rows)
        return
    if rows:
        print_table([Col("run id", whole=True), Col("runbook"), Col("severity"), Col("started"), Col("duration"),
                     Col("outcome"), Col("missed deadlines")],
                    [[row["flow_run_id"], row["runbook"] + (" [drill]" if row["drill"] else ""),
                      row["severity_label"] or row["severity"] or "—", local_time(row["started"]),
                      row["duration"], row["outcome"], ", ".join(row["missed_deadlines"]) or "—"] for row in rows])
    console.print(f"{len(rows)} incident(s) in {folder}", highlight=False)


@app.command()
def recover(run_id: str, why: str = typer.Option("recovered by hand", help="Recorded as the state's message.")) -> None:
    """Reschedule an incident whose worker died; a worker reruns it, done steps come back Cached, answers replay."""
    connect()
    run_id = _run_id(run_id)
    try:
        left = recover_run(run_id, why=why)
    except NotRecoverable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]run {run_id} was {left}; now Scheduled[/green]: a worker of its pool runs it again")


if __name__ == "__main__":
    app(sys.argv[1:])
