"""`runbook`: list, read, check, run and answer the emergency runbooks.

Prefect reads its settings when it is first imported, so this module imports
nothing of Prefect at the top: the callback below first points PREFECT_API_URL
at a running `runbook up` (127.0.0.1:4200) when none is set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Emergency response plans (应急预案) as Prefect flows.", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)

DEFAULT_API = "http://127.0.0.1:4200/api"


@app.callback()
def _main() -> None:
    if "PREFECT_API_URL" not in os.environ:
        import httpx

        try:
            if httpx.get(f"{DEFAULT_API}/health", timeout=0.5).status_code == 200:
                os.environ["PREFECT_API_URL"] = DEFAULT_API
                os.environ.setdefault("PREFECT_UI_URL", DEFAULT_API.removesuffix("/api"))
        except httpx.HTTPError:
            pass


def _load(strict: bool = False):
    from integrations.contacts import load_directory
    from runbooks.loader import load_all
    from runbooks.settings import get_settings

    settings = get_settings()
    return load_all(settings.runbooks_dir, load_directory(settings.contacts_file))


def _one(runbook_id: str):
    runbooks, errors = _load()
    if runbook_id not in runbooks:
        broken = [e for e in errors if Path(e.file).stem == runbook_id]
        if broken:
            err.print(f"[red]runbook {runbook_id} does not load:[/red]")
            for e in broken:
                err.print(str(e))
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


@app.command("list")
def list_runbooks() -> None:
    """Every runbook: id, title, source plan, steps."""
    runbooks, errors = _load()
    table = Table("id", "标题 / title", "plan", "steps", "levels")
    for rb in sorted(runbooks.values(), key=lambda r: r.source.plan):
        levels = ", ".join(lv.id for lv in rb.severity.levels) if rb.severity else "—"
        served = ", ".join(str(p) for p in sorted({rb.source.plan, *rb.source.also}))
        table.add_row(rb.id, f"{rb.title.zh}\n{rb.title.en}", served, str(len(rb.all_steps())), levels)
    console.print(table)
    from runbooks.model import plans_served

    plans = sorted({p for rb in runbooks.values() for p in plans_served(rb.source)})
    console.print(f"{len(runbooks)} runbooks covering plans {', '.join(map(str, plans))}")
    if errors:
        err.print(f"[yellow]{len(errors)} problem(s) keep some runbooks out; run `runbook lint`[/yellow]")


@app.command()
def show(runbook_id: str, language: str = typer.Option("both", help="zh, en or both")) -> None:
    """The runbook as a readable checklist."""
    from runbooks.checklist import checklist

    typer.echo(checklist(_one(runbook_id), language=language))


@app.command()
def lint(paths: list[Path] = typer.Argument(None, help="Runbook files or folders; default: the runbooks folder.")) -> None:
    """Validate runbooks; exit non-zero on any error, naming file, step and fix."""
    from integrations.contacts import load_directory
    from runbooks.loader import RunbookError, load_file, runbook_files
    from runbooks.settings import get_settings

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
    auto: bool = typer.Option(False, help="Answer every manual step with its default; approve as 'drill'."),
    incident: Optional[str] = typer.Option(None, help="A label for the incident, shown in the run name."),
) -> None:
    """Run a runbook here and now; prints the flow run id and the outcome (exit 0 only if completed)."""
    import yaml

    rb = _one(runbook_id)
    scripted = yaml.safe_load(answers.read_text(encoding="utf-8")) if answers else None
    from prefect import tags

    from flows.catalog import FLOWS

    def announce(flow, flow_run, state) -> None:
        console.print(f"flow run {flow_run.id} ({flow_run.name})")

    flow = FLOWS[rb.id].with_options(on_running=[announce])
    with tags(f"runbook:{rb.id}", *(["drill"] if drill else [])):
        state = flow(parameters=_pairs(param, "parameter"), severity=severity, drill=drill, time_scale=time_scale,
                     auto=auto, answers=scripted, incident=incident, return_state=True)
    colour = "green" if state.is_completed() and state.name == "Completed" else "red"
    console.print(f"outcome: [{colour}]{state.name}[/{colour}] — {state.message}")
    if colour != "green":
        raise typer.Exit(1)


@app.command()
def pending(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Steps waiting for an answer: run, runbook, step, since, who may answer."""
    from flows.answers import pending_steps

    steps = pending_steps()
    if as_json:
        console.print_json(json.dumps([s.model_dump(mode="json") for s in steps]))
        return
    table = Table("run id", "runbook", "step", "since", "may answer")
    for s in steps:
        table.add_row(s.flow_run_id, s.runbook, f"{s.step}\n{s.title}", s.since.strftime("%Y-%m-%d %H:%M:%S") if s.since else "",
                      ", ".join(s.may_answer) or "anyone")
    console.print(table)
    console.print(f"{len(steps)} waiting")


@app.command()
def answer(
    run_id: str,
    values: list[str] = typer.Argument(None, help="Answers, key=value (booleans: yes/no)."),
    step: Optional[str] = typer.Option(None, help="The step you mean to answer (refused if the run waits elsewhere)."),
    by: str = typer.Option(..., "--by", help="Who answers: person id or name from the contacts directory."),
) -> None:
    """Answer the step a run is waiting at, through the same resume API the UI uses."""
    from flows.answers import answer_step

    result = answer_step(run_id, by=by, values=_pairs(values or [], "answer"), step=step)
    (console if result.ok else err).print(("[green]" if result.ok else "[red]") + result.message)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def fire(
    runbook_id: str,
    param: list[str] = typer.Option([], "--param", "-p", help="Runbook parameter, key=value."),
    severity: Optional[str] = typer.Option(None, help="Severity level."),
    drill: bool = typer.Option(False, help="A drill."),
    incident: Optional[str] = typer.Option(None, help="Incident label; the same label does not start a second run."),
) -> None:
    """Start an incident on the served runbooks (`runbook up` must be running)."""
    from flows.launch import start_incident

    rb = _one(runbook_id)
    key = f"manual:{rb.id}:{incident}" if incident else None
    run = start_incident(rb.id, _pairs(param, "parameter"), severity=severity, drill=drill, idempotency_key=key, incident=incident)
    console.print(f"started flow run {run.id} ({run.name})")


@app.command()
def up(
    host: str = typer.Option("127.0.0.1", help="Address of the Prefect server and UI."),
    port: int = typer.Option(4200, help="Port of the Prefect server and UI."),
    intake_port: int = typer.Option(8787, help="Port of the alert intake (0: no intake)."),
) -> None:
    """Start the Prefect server (SQLite), serve every runbook and the alert intake; Ctrl-C stops it all."""
    from app.stack import Stack

    runbooks, errors = _load()
    if errors:
        err.print(f"[yellow]{len(errors)} problem(s) keep some runbooks out; run `runbook lint`[/yellow]")
    stack = Stack(host=host, port=port, intake_port=intake_port or None)
    console.print(f"starting Prefect server on {stack.ui_url} ...")
    stack.start()
    console.print(f"[bold green]ready[/bold green]: UI {stack.ui_url} · {len(runbooks)} runbooks served"
                  + (f" · alert intake http://{host}:{intake_port}/alerts/..." if intake_port else "") + " · Ctrl-C stops")
    raise typer.Exit(stack.wait())


@app.command()
def intake(host: Optional[str] = typer.Option(None), port: Optional[int] = typer.Option(None)) -> None:
    """Run the alert receiver alone (Prefect must be reachable at PREFECT_API_URL)."""
    from app.server import run_intake
    from runbooks.settings import get_settings

    settings = get_settings()
    run_intake(host or settings.intake_host, port or settings.intake_port)


@app.command()
def docs(
    out: Path = typer.Option(Path("docs/runbooks"), help="Folder to write the runbook documents into."),
    check: bool = typer.Option(False, help="Only check that the committed documents match the runbooks."),
) -> None:
    """Render every runbook as a Markdown document with a flow diagram into docs/runbooks/."""
    from runbooks.docs import check_docs, render_docs

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
    from runbooks.model import Runbook

    console.print_json(json.dumps(Runbook.model_json_schema()))


@app.command()
def report(
    run_id: str,
    format: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of printing."),
) -> None:
    """The post-incident report of a run: from the archive (survives the run's deletion), else from Prefect."""
    from flows.record.report import FORMATS, NoSuchIncident, load_report, render

    if format not in FORMATS:
        err.print(f"[red]unknown format '{format}'[/red]; one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        text = render(load_report(run_id), format)
    except NoSuchIncident as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        typer.echo(text)


@app.command()
def history(
    runbook_id: Optional[str] = typer.Option(None, "--runbook", help="Only this runbook."),
    since: Optional[str] = typer.Option(None, help="Only incidents started on or after this date (YYYY-MM-DD, UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Archived incidents: runbook, severity, start, duration, outcome and missed deadlines."""
    from datetime import date, datetime, timezone

    from flows.record.archive import all_records
    from flows.record.report import build_report, human_duration

    try:
        start = datetime.combine(date.fromisoformat(since), datetime.min.time(), tzinfo=timezone.utc) if since else None
    except ValueError:
        err.print(f"[red]--since '{since}' is not a date like 2026-10-01[/red]")
        raise typer.Exit(2)
    rows = []
    for record in all_records():
        if (runbook_id and record.runbook != runbook_id) or (start and record.started < start):
            continue
        r = build_report(record)
        rows.append({"flow_run_id": r.flow_run_id, "runbook": r.runbook, "drill": r.drill, "severity": r.severity,
                     "severity_label": r.severity_label, "started": r.started.isoformat(timespec="seconds"),
                     "duration_seconds": round(r.duration_seconds, 1), "outcome": r.outcome,
                     "missed_deadlines": [f"{d.id} ({d.state})" for d in r.missed_deadlines()]})
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("run id", "runbook", "severity", "started (UTC)", "duration", "outcome", "missed deadlines")
    for row in rows:
        table.add_row(row["flow_run_id"], row["runbook"] + (" [drill]" if row["drill"] else ""),
                      row["severity_label"] or row["severity"] or "—", row["started"].replace("T", " ")[:19],
                      human_duration(row["duration_seconds"]), row["outcome"], ", ".join(row["missed_deadlines"]) or "—")
    console.print(table)
    console.print(f"{len(rows)} incident(s)")


@app.command()
def recover(run_id: str, why: str = typer.Option("recovered by hand", help="Recorded as the state's message.")) -> None:
    """Reschedule an incident whose worker died; a worker reruns it, done steps come back Cached, answers replay."""
    from flows.recovery import NotRecoverable, recover_run

    try:
        left = recover_run(run_id, why=why)
    except NotRecoverable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]run {run_id} was {left}; now Scheduled[/green]: a worker of its pool runs it again")


if __name__ == "__main__":
    app(sys.argv[1:])
