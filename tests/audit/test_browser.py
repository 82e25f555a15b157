"""In a real headless browser: the archived HTML report, and the Prefect UI as a responder uses it.

Needs Debian's chromium (`apt-get install -y chromium fonts-noto-cjk`) and the
`playwright` Python package (its own browser download is not used). Skipped
cleanly when either is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app import prefect_server
from tests.conftest import ROOT, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium fonts-noto-cjk)"),
    pytest.mark.skipif(sync_playwright is None, reason="needs the playwright package (pip install playwright)"),
]


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


# ---------------------------------------------------------------- the archived HTML report


def test_the_html_report_renders_its_timeline(browser, tmp_path):
    from flows.record.archive import record_path
    from flows.record.report import load_report
    from tests.audit.helpers import Background, audit_flow, flaky_endpoint

    with flaky_endpoint() as base:
        state = Background(audit_flow(), parameters={"base_url": base},
                           answers={"triage": {"clients_affected": 12, "scope": "outside", "notes": "机房 A"},
                                    "approve": {"decision": "approve", "comment": "同意"}}).join()
    run_id = str(state.state_details.flow_run_id)
    html = record_path(run_id).with_suffix(".html")
    report = load_report(run_id)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(html.as_uri())
    assert page.title().startswith("审计演练 / Audit drill")
    rows = page.locator("#timeline tr[data-kind]")
    assert rows.count() == len(report.timeline.entries)
    answered = page.locator('#timeline tr[data-kind="step.answered"][data-step="triage"]')
    assert answered.is_visible() and answered.get_attribute("data-actor") == "li-deputy"
    assert page.locator('#timeline tr[data-kind="task.awaiting-retry"]').count() == 2
    assert "一类故障" in page.locator("#severity").inner_text()
    triage = page.locator('section.answer[data-step="triage"]')
    assert "受影响终端数 Clients affected" in triage.inner_text() and "outside (外部 Outside)" in triage.inner_text()
    assert "受影响终端：12" in page.locator('pre.document[data-step="final-report"]').inner_text()
    # Chinese renders as glyphs, not boxes: a CJK string is about as wide as its character count in ems.
    width = page.evaluate("""() => { const s = document.createElement('span'); s.style.fontSize = '20px';
        s.textContent = '记录故障'; document.body.appendChild(s); const w = s.getBoundingClientRect().width; s.remove(); return w; }""")
    assert 60 <= width <= 100, f"CJK text is {width}px wide"
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


# ---------------------------------------------------------------- the Prefect UI


@pytest.fixture
def ui_server(tmp_path):
    """A Prefect server with its UI, on its own port, telling the UI its own API address."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "ui-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(prefect_server.command("127.0.0.1", port),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180  # the first start builds the UI bundle for this API address
    try:
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=1).status_code == 200 and httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"the UI server exited; see {home / 'server.log'}"
            assert time.monotonic() < deadline, "the UI server did not start in 180 s"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}", api
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _paused_run(api: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}, timeout=5).json()
        if runs:
            return runs[0]["id"]
        time.sleep(0.5)
    raise AssertionError("no run paused on the UI server")


def test_a_responder_answers_a_manual_step_in_the_prefect_ui(browser, ui_server, tmp_path):
    ui, api = ui_server
    incidents = tmp_path / "incidents"
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_UI_URL": ui, "PREFECT_HOME": str(tmp_path / "client-home"),
           "RUNBOOK_RUNBOOKS_DIR": str(ROOT / "tests" / "fixtures" / "audit"), "RUNBOOK_INCIDENTS_DIR": str(incidents),
           "RUNBOOK_STATE_DIR": str(tmp_path / "var")}
    out = open(tmp_path / "run.log", "w")
    run = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "ui-drill"], cwd=ROOT, env=env,
                           stdout=out, stderr=subprocess.STDOUT)
    try:
        run_id = _paused_run(api)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click()
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        # The step's Markdown instructions sit above the form.
        heading = dialog.get_by_role("heading", name="记录故障 / Record the fault")
        heading.wait_for(state="visible", timeout=30_000)  # the UI fetches the description after opening the dialog
        assert heading.is_visible()
        assert "可回答 May answer:" in dialog.inner_text() and "li-deputy" in dialog.inner_text()

        def field(label: str):
            return dialog.locator(".schema-form-property").filter(
                has=page.locator(".schema-form-property__label", has_text=label))

        field("回答人 Answered by").locator("textarea").fill("li-deputy")
        field("受影响终端数 Clients affected").locator("input").fill("7")
        scope = field("范围 Scope")
        scope.locator("button.p-select-button__control").focus()
        page.keyboard.press("ArrowDown")  # the select opens from the keyboard; a click toggles it shut again
        # A choice shows its labels, not its values.
        page.get_by_role("option", name="内部 / Inside").wait_for(state="visible", timeout=10_000)
        assert page.get_by_role("option", name="inside", exact=True).count() == 0
        page.get_by_role("option", name="外部 / Outside").click()
        page.screenshot(path=str(tmp_path / "resume-dialog.png"))
        dialog.get_by_role("button", name="Submit").click()

        assert run.wait(90) == 0, (tmp_path / "run.log").read_text()
    finally:
        if run.poll() is None:
            run.kill()
        out.close()
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()["state"]
    assert state["type"] == "COMPLETED" and state["name"] == "Completed"
    answer = httpx.get(f"{api}/flow_runs/{run_id}/input/paused-record-fault-1-response", timeout=5).json()
    assert answer == {"answered_by": "li-deputy", "clients_affected": 7, "scope": "外部 / Outside"}  # as the form spells it

    from flows.record.archive import IncidentRecord

    record = IncidentRecord.model_validate_json(next(incidents.glob(f"ui-drill/*-{run_id}.json")).read_text(encoding="utf-8"))
    assert record.steps["record-fault"]["answered_by"] == "li-deputy"
    assert record.steps["record-fault"]["clients_affected"] == 7 and record.steps["record-fault"]["scope"] == "outside"
    assert [e.actor for e in record.entries("step.answered")] == ["li-deputy"]
    assert any(e.kind == "form.submitted" and e.actor == "li-deputy" for e in record.history)
    assert next(incidents.glob(f"ui-drill/*-{run_id}.html")).exists()
