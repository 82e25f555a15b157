"""The `runbook` command as people use it: ids they can copy, JSON for scripts, a server that is there or a clear no."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Paused

from flows.answers import pending_steps
from flows.catalog import make_flow
from flows.server import DEFAULT_API, STACK_FILE, forget_stack, record_stack, recorded_stack, unreachable_reason
from integrations.contacts import load_directory
from runbooks.loader import load_all, load_file
from runbooks.settings import get_settings
from tests.conftest import free_port
from tests.drill import Background, wait_for_step
from tests.test_engine import fixture_flow, run_root

ROOT = Path(__file__).resolve().parent.parent


def runbook(*args: str, env: dict[str, str] | None = None, columns: int = 80) -> subprocess.CompletedProcess:
    """The command as a user runs it, its output piped (as in a script) and COLUMNS set (as in a narrow terminal)."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": str(columns), **(env or {})})


def shipped_ids() -> list[str]:
    settings = get_settings()
    runbooks, _ = load_all(settings.runbooks_dir, load_directory(settings.contacts_file))
    return sorted(runbooks)


@flow(name="cli-test-placeholder")
def placeholder() -> None:
    """Never runs: its flow runs are created directly in the states a test needs."""


def make_runs(n: int, **kwargs) -> list[str]:
    with get_client(sync_client=True) as client:
        return [str(client.create_flow_run(placeholder, tags=["test"], **kwargs).id) for _ in range(n)]


def delete_runs(ids: list[str]) -> None:
    with get_client(sync_client=True) as client:
        for run_id in ids:
            client.delete_flow_run(UUID(run_id))


# ---------------------------------------------------------------- list, show, history


def test_list_at_80_columns_shows_every_id_whole():
    result = runbook("list", columns=80)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    cells = {cell.strip() for line in result.stdout.splitlines() for cell in line.replace("│", "┃").split("┃")}
    cells |= {line.removeprefix("id: ").strip() for line in result.stdout.splitlines()}
    missing = [rid for rid in shipped_ids() if rid not in cells]
    assert not missing, f"ids cut or wrapped at 80 columns: {missing}\n{result.stdout}"


def test_list_json_is_one_document_with_every_runbook():
    result = runbook("list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(r["id"] for r in listed) == shipped_ids()
    hospital = next(r for r in listed if r["id"] == "hospital-his-outage")
    assert hospital["plans"] == [11, 12] and hospital["steps"] > 0 and hospital["title"]["en"]


def test_show_json_is_the_runbook():
    result = runbook("show", "pump-station-power-loss", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "pump-station-power-loss"


def test_history_without_an_archive_says_where_it_looked_and_how_to_point_it(tmp_path):
    nowhere = tmp_path / "no-archive-here"
    result = runbook("history", env={"RUNBOOK_INCIDENTS_DIR": str(nowhere)})
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert str(nowhere) in said and "RUNBOOK_INCIDENTS_DIR" in said
    as_json = runbook("history", "--json", env={"RUNBOOK_INCIDENTS_DIR": str(nowhere)})
    assert json.loads(as_json.stdout) == []


# ---------------------------------------------------------------- finding the server


def test_fire_help_does_not_ask_for_runbook_up():
    """fire starts an incident on any stack that has the runbook's deployment (runbook up, or production's)."""
    shown = runbook("fire", "--help", columns=200)
    assert shown.returncode == 0 and "must be running" not in shown.stdout
    assert "any stack" in shown.stdout


def test_fire_with_the_server_unreachable_exits_non_zero_says_why_and_creates_nothing(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/api"
    home = tmp_path / "prefect-home"
    result = runbook("fire", "pump-station-power-loss", "--drill", env={"PREFECT_API_URL": closed, "PREFECT_HOME": str(home)})
    assert result.returncode != 0
    assert "started flow run" not in result.stdout
    assert closed in result.stderr and "connection refused" in result.stderr
    assert "runbook up" in result.stderr and "PREFECT_API_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(home.glob("*.db")), "no temporary Prefect server (its database) may be started"


def test_a_clock_that_is_not_a_time_is_refused_before_anything_runs():
    for command in ("run", "fire"):
        result = runbook(command, "hospital-his-outage", "--drill", "--clock", "tomorrow morning")
        assert result.returncode == 2, result.stderr
        assert "--clock 'tomorrow morning' is not a time" in result.stderr and "2026-11-30T09:00" in result.stderr
        assert "Traceback" not in result.stderr
        real = runbook(command, "hospital-his-outage", "--clock", "2026-11-30T09:00")
        assert real.returncode == 2 and "--clock is for drills" in real.stderr and "--drill" in real.stderr


def test_fire_with_nothing_set_and_no_stack_running_starts_no_temporary_server(tmp_path):
    """Prefect starts a server of its own when PREFECT_API_URL is unset: an incident nobody would ever see."""
    if unreachable_reason(DEFAULT_API) is None:
        pytest.skip(f"a server answers at {DEFAULT_API} on this machine")
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), COLUMNS="80")
    result = subprocess.run([sys.executable, "-m", "cli.main", "fire", "pump-station-power-loss", "--drill"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert "started flow run" not in result.stdout
    assert "runbook up" in result.stderr and "PREFECT_API_URL" in result.stderr
    assert not list(home.glob("*.db"))


def test_without_prefect_api_url_the_commands_find_the_recorded_stack(tmp_path, prefect_api):
    """`runbook up` on any port records where it runs; commands find it with nothing set."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / STACK_FILE).write_text(json.dumps({"api_url": prefect_api, "ui_url": prefect_api.removesuffix("/api"),
                                               "pid": os.getpid()}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), COLUMNS="80")
    result = subprocess.run([sys.executable, "-m", "cli.main", "pending", "--json"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


# ---------------------------------------------------------------- answering by a short id


def test_answer_takes_a_unique_start_of_a_run_id_and_refuses_an_ambiguous_one():
    others = make_runs(40)  # 40 runs on 16 first characters: some character starts two of them
    try:
        run = Background(fixture_flow("approval-drill"), parameters={"system": "HIS"}, drill=True)
        run_id = wait_for_step("record-fault").flow_run_id
        waiting_ids = {i for p in pending_steps() for i in (p.flow_run_id, p.incident_id)}
        counts = Counter(i[0] for i in others)
        shared = next(c for c, n in counts.items() if n >= 2 and not any(w.startswith(c) for w in waiting_ids))

        ambiguous = runbook("answer", shared, "--by", "wang-chief", "clients_affected=1", "scope=inside")
        assert ambiguous.returncode != 0
        assert "Traceback" not in ambiguous.stderr
        for candidate in (i for i in others if i.startswith(shared)):
            assert candidate in ambiguous.stderr, "the candidates are listed"

        short = run_id[:8]
        answered = runbook("answer", short, "--by", "wang-chief", "clients_affected=1", "scope=inside")
        assert answered.returncode == 0, answered.stdout + answered.stderr
        assert "answered step 'record-fault'" in answered.stdout

        assert run.join().name == "Expired"  # nobody approves the restart in time (the fixture's approval expires in seconds)
    finally:
        delete_runs(others)


def test_pending_reads_every_waiting_run_past_one_page():
    paused = make_runs(205, state=Paused())
    try:
        listed = {p.flow_run_id for p in pending_steps()}
        assert set(paused) <= listed
    finally:
        delete_runs(paused)
    with get_client(sync_client=True) as client:
        assert not client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in paused[:3]])))


# ---------------------------------------------------------------- parallel tracks


def two_tracks():
    """A runbook whose two parallel tracks each wait for a person (its own file: the shipped runbooks change)."""
    return make_flow(load_file(ROOT / "tests" / "fixtures" / "cli" / "two-tracks.yaml", load_directory(get_settings().contacts_file)))


def test_pending_groups_track_waits_under_their_incident_and_answer_by_incident_asks_which_step():
    """Two tracks wait at once: both show under the incident's id; answering the incident must name the step."""
    run = Background(two_tracks(), drill=True, test_tags=("test", "runbook:two-tracks"))
    valves = wait_for_step("chief-closes-valves")
    series = wait_for_step("deputy-opens-valve")
    incident = run_root(valves.flow_run_id)
    assert valves.flow_run_id != incident and series.flow_run_id != incident, "each track waits in a child run"

    as_json = runbook("pending", "--json")
    assert as_json.returncode == 0, as_json.stderr
    mine = [p for p in json.loads(as_json.stdout) if p["incident_id"] == incident]
    assert {p["step"] for p in mine} == {"chief-closes-valves", "deputy-opens-valve"}
    assert all(p["in_track"] and p["runbook"] == "two-tracks" for p in mine)

    text = runbook("pending", columns=80).stdout
    header = text.index(f"incident {incident}")  # the id to answer with, whole on the incident's line
    rows = [line.strip("│┃ ") for line in text[header:].splitlines()]
    assert any(r.startswith("chief-closes-valves ") for r in rows) and any(r.startswith("deputy-opens-valve ") for r in rows), text
    assert text.count("in a parallel") == 2 and "…" not in text

    which = runbook("answer", incident[:10], "--by", "wang-chief", "valves_closed=1#")
    assert which.returncode != 0
    assert "chief-closes-valves" in which.stderr and "deputy-opens-valve" in which.stderr and "--step" in which.stderr

    closed = runbook("answer", incident[:10], "--step", "chief-closes-valves", "--by", "wang-chief", "valves_closed=1#, 2#")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    opened = runbook("answer", incident, "--step", "deputy-opens-valve", "--by", "li-deputy", "valve_open=yes")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert run.join().name == "Completed"


def test_the_stack_record_is_found_while_its_process_lives_and_forgotten_when_it_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    record_stack("http://127.0.0.1:4391/api", "http://127.0.0.1:4391")
    assert recorded_stack()["api_url"] == "http://127.0.0.1:4391/api"
    forget_stack()
    assert recorded_stack() is None and not (tmp_path / STACK_FILE).exists()

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / STACK_FILE).write_text(json.dumps({"api_url": "http://127.0.0.1:4391/api", "pid": int(gone)}))
    assert recorded_stack() is None, "a record left by a process that died is not a stack"
