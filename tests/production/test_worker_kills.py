"""A worker killed while an incident's parallel tracks wait for people (issue #11, durable time).

The incident is `pump-station-power-loss` (runbooks/), whose first step is a parallel one: the deputy's track and
the chief's track each wait for their operator, in the incident's one flow process (a track cannot suspend). Its
people are paged through a webhook the test counts, per person and step.

- Only the worker process is SIGKILLed: its flow process lives on, an orphan, still sending heartbeats. It goes
  on with the incident; nothing may start a second process on it.
- The worker and the flow process are SIGKILLed (the machine died): nobody writes Crashed, the watcher finds the
  silence and sets the incident going again on a new worker.

Either way the incident completes with every page once, every answer once in the report, and at no moment two
processes running it.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from flows.record.archive import IncidentRecord
from tests.production.conftest import ROOT, cluster, stack
from tests.production.test_production import run_state, wait_until

pytestmark = pytest.mark.postgres

RUNBOOK = "pump-station-power-loss"
DEAD_AFTER = "45"  # the least the watcher takes with 30 s heartbeats (1.5 periods)
PEOPLE = {"wang-chief": ["chief-operator"], "li-deputy": ["deputy-operator"], "zhao-dispatch": ["dispatch", "water-users"]}
# every step's answer, by whom (the step's first answerer)
ANSWERS = {
    "open-series-valve": ("li-deputy", {"valve_open": True}),
    "confirm-phoned": ("li-deputy", {"reached": "dispatch, blast furnace, high-voltage room"}),
    "check-diesel-pump": ("wang-chief", {"auto_started": True, "outlet_pressure_mpa": 0.42}),
    "check-header-pressure": ("wang-chief", {"header_pressure_mpa": 0.4, "normal": True}),
    "close-butterfly-valves": ("wang-chief", {"valves_closed": "1, 2, 3"}),
    "power-restored": ("wang-chief", {"restored_at": "2024-05-01T10:30:00+08:00"}),
    "record-diesel-parameters--1": ("wang-chief", {"fuel_level_pct": 80, "header_pressures": "0.40 / 0.41"}),
    "restart-pumps": ("wang-chief", {"sequence": "1, 2, 3 at 10:40", "supply_normal": True}),
    "final-record": ("wang-chief", {"cause": "grid fault"}),
}
TRACK_WAITS = ["confirm-phoned", "check-diesel-pump"]  # where the tracks wait when the worker is killed
# who is paged at which step, once each: the people asked, and the notify steps' recipients
PAGES = {
    ("li-deputy", "open-series-valve"), ("zhao-dispatch", "notify-users"), ("li-deputy", "confirm-phoned"),
    ("wang-chief", "check-diesel-pump"), ("wang-chief", "check-header-pressure"),
    ("wang-chief", "close-butterfly-valves"), ("li-deputy", "close-butterfly-valves"),
    ("wang-chief", "power-restored"), ("li-deputy", "power-restored"),
    ("wang-chief", "record-diesel-parameters--1"), ("li-deputy", "record-diesel-parameters--1"),
    ("wang-chief", "restart-pumps"), ("zhao-dispatch", "notify-restored"), ("wang-chief", "final-record"),
}


class Pager(BaseHTTPRequestHandler):
    """The people's pagers: every page received, as (person, step)."""

    pages: list[tuple[str, str]] = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.lock:
            self.pages.append((self.path.strip("/"), body.get("step_id")))
        reply = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture(scope="module")
def postgres():
    """A cluster of this module's own: every module's stack creates the document's `prefect` role and database."""
    yield from cluster()


@pytest.fixture(scope="module")
def production_stack(postgres, tmp_path_factory):
    runbooks = tmp_path_factory.mktemp("runbooks")
    shutil.copy(ROOT / "runbooks" / f"{RUNBOOK}.yaml", runbooks)  # the shipped runbook, as it is
    yield from stack(postgres, runbooks)


@pytest.fixture
def pagers(production):
    """A contacts file whose people are paged through webhooks to the test's pagers."""
    Pager.pages = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pager)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    contacts = production.home / "contacts.yaml"
    contacts.write_text(yaml.safe_dump({"people": [
        {"id": person, "name": person, "roles": roles, "channels": [{"channel": "webhook", "to": f"{url}/{person}"}]}
        for person, roles in PEOPLE.items()]}))
    production.overrides["RUNBOOK_CONTACTS_FILE"] = str(contacts)
    yield Pager.pages
    production.overrides.clear()
    server.shutdown()


class OneProcess:
    """Watches which processes run the incident (the run's `infrastructure_pid`): never two alive at once.

    A process whose run suspended has left the incident (its flow returned; it flushes its logs and exits), and an
    answer may resume the run in a new process before it is gone. It may linger for LEAVING seconds after the
    run suspended; past that, or if the run never suspended under it, two live processes are an overlap."""

    LEAVING = 15.0

    def __init__(self, run_id):
        self.run_id, self.seen, self.overlaps = UUID(str(run_id)), {}, []
        self.began: dict[int, float | None] = {}  # pid -> when the process started (epoch seconds)
        self.left_at: dict[int, float] = {}  # pid -> when the run suspended under it (server time, epoch seconds)
        self.stop = threading.Event()
        # in this test's settings (the server it talks to through temporary_settings, a context variable)
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._watch,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            while not self.stop.wait(0.3):
                try:
                    recorded = client.read_flow_run(self.run_id).infrastructure_pid or ""
                    pid = recorded.rpartition(":")[2]
                    if pid.isdigit() and int(pid) not in self.seen:
                        self._new_process(client, int(pid))
                except Exception:  # noqa: BLE001  (a slow answer: the next look)
                    continue
                now = time.time()
                alive = [p for p, since in self.seen.items() if since is not None and started(p) == since]
                # beside the newest, only processes still leaving a suspended run, within their grace
                if any(p not in self.left_at or now - self.left_at[p] > self.LEAVING for p in alive[:-1]):
                    self.overlaps.append(alive)

    def _new_process(self, client, pid: int) -> None:
        """A new process is recorded: did the run suspend under the one before it (after that one started)?"""
        before = next(reversed(self.seen), None)
        if before is not None and self.began.get(before) is not None:
            suspended = [s.timestamp.timestamp() for s in client.read_flow_run_states(self.run_id) if s.name == "Suspended"]
            if suspended and max(suspended) >= self.began[before]:
                self.left_at[before] = max(suspended)
        self.seen[pid] = started(pid)
        self.began[pid] = start_time(pid)


def start_time(pid: int) -> float | None:
    """When a process started, in epoch seconds (its start in clock ticks after boot, from /proc)."""
    since_boot = started(pid)
    if since_boot is None:
        return None
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    return boot + int(since_boot) / os.sysconf("SC_CLK_TCK")


def started(pid: int) -> str | None:
    """A live (not zombie) process's start time, which tells it from a later one given the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def waiting(run_id) -> set[str]:
    from flows.answers import pending_steps

    return {p.step for p in pending_steps() if p.incident_id == str(run_id)}


def answer(run_id, step: str) -> None:
    from flows.answers import answer_step

    by, values = ANSWERS[step]
    result = answer_step(str(run_id), by=by, values=values, step=step)
    assert result.ok, result.message


def flow_pid(run_id) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(UUID(str(run_id))).infrastructure_pid or ""
    return int(recorded.rpartition(":")[2])


def runs_of(run_id) -> list[tuple[str, str, str]]:
    """The incident's flow runs, its tracks' too: (name, id, state)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"runbook:{RUNBOOK}"])))
    return [(r.name, str(r.id)[:8], r.state.name if r.state else "?") for r in sorted(runs, key=lambda r: r.created)]


def finish(production, run_id) -> None:
    """Answer every step as it comes up until the incident closes."""
    answered: set[str] = set()

    def step_on():
        state = run_state(run_id)
        if state.is_final() and not state.is_crashed():  # a crashed incident is the watcher's to set going again
            return state
        for step in sorted(waiting(run_id) - answered):
            answer(run_id, step)
            answered.add(step)
        return None

    try:
        final = wait_until("the incident to finish", step_on, 150, every=1)
    except AssertionError:
        raise AssertionError(f"the incident did not finish: answered {sorted(answered)}, waiting at "
                             f"{sorted(waiting(run_id))}; runs: {runs_of(run_id)}; pages: {sorted(Pager.pages)}") from None
    assert final.is_completed(), f"{final.name}: {final.message}\n{production.log('worker-2')}"


def kill_during_tracks(production, pagers, *, flow_process_too: bool) -> tuple[str, IncidentRecord, dict]:
    first = production.worker("worker-1")
    production.watcher(RUNBOOK_DEAD_AFTER_SECONDS=DEAD_AFTER)
    orphan = None
    with production.settings():
        from flows.launch import start_incident

        run = start_incident(RUNBOOK, {}, incident=f"kill-{flow_process_too}", time_scale=0.25)  # tiers after 8 min: none
        with OneProcess(run.id) as processes:
            wait_until("the deputy's first ask", lambda: "open-series-valve" in waiting(run.id), 120)
            answer(run.id, "open-series-valve")  # the deputy's track goes on: a page sent (notify-users), then an ask
            wait_until("both tracks to wait", lambda: set(TRACK_WAITS) <= waiting(run.id), 60)
            pid = flow_pid(run.id)
            first.send_signal(signal.SIGKILL)  # the worker process only
            first.wait(10)
            if flow_process_too:  # and the incident's process: the machine is gone
                os.kill(pid, signal.SIGKILL)
            else:
                # The orphan lives on and says so: past the watcher's silence limit (and a pass), nobody takes
                # its incident for dead, so nothing starts a second process on it
                orphan = pid
                killed = time.monotonic()
                while time.monotonic() - killed < float(DEAD_AFTER) + 8:
                    assert started(pid) is not None, "killing only the worker leaves its flow process running"
                    assert run_state(run.id).name == "Running", f"a live orphan was taken for dead: {run_state(run.id)}"
                    time.sleep(2)
            production.worker("worker-2")
            try:
                finish(production, run.id)
            finally:
                if orphan is not None and started(orphan) is not None:
                    os.kill(orphan, signal.SIGKILL)
                os.killpg(first.pid, signal.SIGKILL) if _group_alive(first.pid) else None
        assert not processes.overlaps, f"two processes ran the incident at once: {processes.overlaps}"
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            states = [s.name for s in client.read_flow_run_states(UUID(str(run.id)))]
    archived = wait_until("the archive", lambda: list((production.incidents / RUNBOOK).glob(f"*{run.id}*.json")), 30)
    record = IncidentRecord.model_validate_json(archived[0].read_text(encoding="utf-8"))
    report = subprocess.run([sys.executable, "-m", "cli.main", "report", str(run.id), "--format", "json"], cwd=ROOT,
                            env=production.env("cli"), capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    print(f"states: {states}; processes: {list(processes.seen)}")
    return str(run.id), record, {"states": states, "report": json.loads(report.stdout), "pids": list(processes.seen)}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def check_once(record: IncidentRecord, report: dict, pages: list[tuple[str, str]]) -> None:
    """Each page once (at the pagers and on the journal), each ask's page once, each answer once."""
    assert sorted(pages) == sorted(PAGES), f"pages received: {sorted(pages)}"
    journal_pages = sorted((e.data.get("person"), e.step) for e in record.journal if e.kind == "page.sent")
    assert journal_pages == sorted(PAGES), journal_pages
    answered = [e.step for e in record.journal if e.kind == "step.answered"]
    assert sorted(answered) == sorted(ANSWERS), answered
    in_report = [a["step"] for a in report["answers"]]
    assert sorted(in_report) == sorted(ANSWERS), in_report
    assert record.kinds().count("incident.started") == 1, record.kinds()


def test_only_the_worker_killed_while_tracks_wait_its_orphan_finishes_alone(production, pagers):
    run_id, record, seen = kill_during_tracks(production, pagers, flow_process_too=False)
    check_once(record, seen["report"], pagers)
    assert "Crashed" not in seen["states"], f"the orphan was alive and heartbeating: {seen['states']}"


def test_worker_and_flow_process_killed_while_tracks_wait_the_watcher_heals_it(production, pagers):
    run_id, record, seen = kill_during_tracks(production, pagers, flow_process_too=True)
    check_once(record, seen["report"], pagers)
    assert seen["states"].count("Crashed") == 1 and "Recovering" in seen["states"], seen["states"]
    assert record.kinds().count("incident.recovered") == 1, record.kinds()
