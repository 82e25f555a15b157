"""The audit trail against the real Prefect server.

One incident of the audit-drill fixture runs with people answering through the
API while it waits: a flaky action retried twice, an escalation while the triage
form waits, a deadline missed meanwhile, an answer, an approval, two parallel
tracks, a drafted report. Its timeline, its artifacts, its archive (JSON + HTML)
and `runbook report` must all tell the same story, and the report must survive
the run's deletion from Prefect.
"""

from __future__ import annotations

import json
import logging
import time
from html.parser import HTMLParser
from uuid import UUID

import pytest
from typer.testing import CliRunner

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import ObjectNotFound

from cli.main import app
from flows.answers import answer_step
from flows.record.archive import find_record, record_path
from flows.record.report import build_report, load_report
from flows.record.report import build_timeline
from flows.record.timeline import Timeline, TimelineEntry, journal_from_events
from tests.audit.helpers import Background, audit_flow, audit_runbook, flaky_endpoint, wait_for_step

pytestmark = pytest.mark.server
runner = CliRunner()


def _wait_for_event(run_id: str, kind: str, seconds: float = 20) -> None:
    """The journal is also a stream of Prefect events: wait until one has been seen by the server."""
    deadline = time.monotonic() + seconds
    while not any(e.kind == kind for e in journal_from_events(run_id)):
        assert time.monotonic() < deadline, f"no {kind} event within {seconds} s"
        time.sleep(0.5)


@pytest.fixture(scope="module", params=["INFO", "WARNING"], ids=["log-info", "log-warning"])
def incident(request) -> str:
    """Run the audit drill once per log level, answering as the people would; return its flow run id.

    WARNING is a common production setting: the audit trail must not depend on what is logged."""
    loggers = [logging.getLogger(name) for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "runbook")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(request.param)
    try:
        return _run_incident()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _run_incident() -> str:
    with flaky_endpoint() as base:
        run = Background(audit_flow(), parameters={"base_url": base})
        run_id = wait_for_step("triage").flow_run_id
        _wait_for_event(run_id, "escalation.tier")   # dispatch paged after 1 s without an answer
        _wait_for_event(run_id, "deadline.missed")   # the 8 s report deadline passes while triage waits
        result = answer_step(run_id, by="li-deputy", step="triage",
                             values={"clients_affected": 12, "scope": "outside", "notes": "机房 A 断电"})
        assert result.ok, result.message
        wait_for_step("approve", run_id=run_id)
        assert answer_step(run_id, by="wang-chief", values={"decision": "approve", "comment": "同意重启 go"}).ok
        state = run.join()
    assert state.is_completed() and state.name == "Completed", state.message
    return run_id


def _index(timeline: Timeline, kind: str, *, step: str | None = None, actor: str | None = None) -> int:
    for i, e in enumerate(timeline.entries):
        if e.kind == kind and (step is None or e.step == step) and (actor is None or e.actor == actor):
            return i
    raise AssertionError(f"no {kind} (step={step}, actor={actor}) in the timeline: {timeline.kinds()}")


def test_the_timeline_shows_retry_escalation_missed_deadline_answer_and_approval_in_order(incident):
    tl = build_timeline(incident)
    assert tl.prefect_available
    assert [e.at for e in tl.entries] == sorted(e.at for e in tl.entries), "ordered by time"
    assert all(e.actor and e.at.tzinfo is not None for e in tl.entries), "every entry has an actor and an aware time"

    retry = _index(tl, "task.awaiting-retry", step="block-address", actor="prefect")
    escalation = _index(tl, "escalation.tier", step="triage", actor="runbook")
    missed = _index(tl, "deadline.missed", step="first-report", actor="runbook")
    submitted = _index(tl, "form.submitted", step="triage", actor="li-deputy")
    answered = _index(tl, "step.answered", step="triage", actor="li-deputy")
    approved = _index(tl, "approval.approved", step="approve", actor="wang-chief")
    drafted = _index(tl, "report.drafted", step="final-report")
    assert retry < escalation < missed < submitted < answered < approved < drafted

    # The retry as Prefect saw it: each failed try with its error, AwaitingRetry (retry_delay 1 s),
    # Retrying, and Completed on the third run.
    block = [e for e in tl.entries if e.step == "block-address" and e.source == "prefect"]
    kinds = [e.kind for e in block]
    assert kinds.count("task.awaiting-retry") == 2 and kinds.count("task.retrying") == 2
    failed = [e for e in tl.entries if e.step == "block-address" and e.kind == "step.try-failed"]
    assert len(failed) == 2 and all("503" in e.text for e in failed)
    assert block[-1].kind == "task.completed" and block[-1].data["run_count"] == 3
    # Escalation paged dispatch; the missed deadline paged the chief (its on_miss step).
    assert any(e.kind == "page.sent" and e.data.get("person") == "zhao-dispatch" for e in tl.entries[escalation:missed + 1])
    assert any(e.kind == "page.sent" and e.step == "report-late" and e.data.get("person") == "wang-chief" for e in tl.entries[missed:])
    # The approval form as submitted, read back from the flow run inputs.
    form = tl.entries[_index(tl, "form.submitted", step="approve")]
    assert form.actor == "wang-chief" and form.data["values"]["decision"] == "approve" and form.data["pause_key"] == "approve-1"
    # Parallel tracks are child flow runs: their states and their task runs are in the timeline too.
    assert _index(tl, "track.completed", step="power") and _index(tl, "track.completed", step="network")
    assert _index(tl, "task.completed", step="power-wait")
    assert tl.entries[-1].kind == "flow.completed"


def test_the_run_carries_the_timeline_and_progress_artifacts(incident):
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(incident)])))
    by_key = {a.key: a for a in artifacts}
    timeline = by_key["incident-audit-drill"]
    assert timeline.type == "markdown"
    assert "**missed**" in timeline.data or "**met-late**" in timeline.data
    for text in ("deadline.missed", "task.awaiting-retry", "li-deputy", "wang-chief", "受影响终端数 Clients affected",
                 "outside (外部 Outside)", "十台以上终端受影响", "zhao-dispatch"):
        assert text in timeline.data, text
    progress = by_key["progress-audit-drill"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert "✅" in progress.description and "resolved" in progress.description
    assert by_key["audit-drill-final-report"].type == "markdown"


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[tuple] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-kind" in a:
            self.rows.append((a["data-at"], a["data-kind"], a["data-step"] or None, a["data-actor"]))


def test_the_archived_json_and_html_agree_with_the_timeline(incident):
    live = build_timeline(incident)
    path = record_path(incident)
    html_path = path.with_suffix(".html")
    assert path.exists() and html_path.exists()
    record = find_record(incident)
    archived = build_report(record).timeline

    live_keys = [e.key() for e in live.entries]
    archived_keys = [e.key() for e in archived.entries]
    assert set(archived_keys) <= set(live_keys), "everything archived is what Prefect and the journal say"
    extra = [e for e in live.entries if e.key() not in set(archived_keys)]
    assert extra and all(e.kind.startswith("flow.") for e in extra), "only the run's final state came after the archive"

    parser = _Rows()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert parser.rows == archived_keys, "the HTML shows the archived timeline, row for row"
    for kind in ("task.awaiting-retry", "escalation.tier", "deadline.missed", "step.answered", "approval.approved"):
        assert any(k[1] == kind for k in parser.rows), kind

    # The JSON of `runbook report` is the archived report.
    out = runner.invoke(app, ["report", incident, "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [TimelineEntry.model_validate(e).key() for e in data["timeline"]["entries"]] == archived_keys


def test_the_report_has_what_the_plan_requires(incident):
    r = load_report(incident)
    assert r.source == "archive" and r.outcome == "resolved"
    assert r.severity == "1" and "十台以上终端受影响" in r.severity_reason and "Ten or more" in r.severity_reason
    triage = next(a for a in r.answers if a.step == "triage")
    fields = {f.field: f for f in triage.fields}
    assert triage.answered_by == "li-deputy"
    assert fields["clients_affected"].label == "受影响终端数 Clients affected" and fields["clients_affected"].value == 12
    assert fields["scope"].shown == "outside (外部 Outside)"
    assert fields["notes"].label == "备注 Notes" and fields["notes"].value == "机房 A 断电"
    approve = next(a for a in r.answers if a.step == "approve")
    assert approve.answered_by == "wang-chief"
    assert {f.field: f.value for f in approve.fields}["decision"] == "approve"
    doc = next(d for d in r.documents if d.step == "final-report")
    assert "受影响终端：12" in doc.document and "Approved by: wang-chief" in doc.document
    # Missed while triage waited; met late when the report was drafted (if the watcher saw it before the close).
    assert [d.id for d in r.deadlines] == ["first-report"] and r.deadlines[0].state in ("missed", "met-late")
    paged = {(p.person, p.step) for p in r.paged if p.outcome == "sent"}
    assert ("zhao-dispatch", "triage") in paged and ("wang-chief", "report-late") in paged and ("zhao-dispatch", "tell-dispatch") in paged

    md = runner.invoke(app, ["report", incident])
    assert md.exit_code == 0 and "## 时间线 Timeline" in md.stdout and "deadline.missed" in md.stdout


def test_history_lists_the_incident_with_its_missed_deadline(incident):
    out = runner.invoke(app, ["history", "--runbook", "audit-drill", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    row = next(r for r in rows if r["flow_run_id"] == incident)
    assert row["severity"] == "1" and row["outcome"] == "resolved" and row["duration_seconds"] > 4
    assert row["missed_deadlines"] in (["first-report (missed)"], ["first-report (met-late)"])
    later = runner.invoke(app, ["history", "--since", "2999-01-01", "--json"])
    assert json.loads(later.stdout) == []
    table = runner.invoke(app, ["history", "--runbook", "audit-drill"])
    assert table.exit_code == 0 and f"{len(rows)} incident(s)" in table.stdout


def test_the_report_survives_deleting_the_run_from_prefect(incident):
    """Last in this module: it deletes the run the other tests read."""
    with get_client(sync_client=True) as client:
        client.delete_flow_run(UUID(incident))
        with pytest.raises(ObjectNotFound):
            client.read_flow_run(UUID(incident))
    out = runner.invoke(app, ["report", incident, "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["source"] == "archive" and data["outcome"] == "resolved"
    kinds = [e["kind"] for e in data["timeline"]["entries"]]
    assert "task.awaiting-retry" in kinds and "step.answered" in kinds and "form.submitted" in kinds
    tl = build_timeline(incident)
    assert not tl.prefect_available and _index(tl, "task.awaiting-retry", step="block-address") >= 0
    html = runner.invoke(app, ["report", incident, "--format", "html"])
    assert html.exit_code == 0 and 'data-kind="deadline.missed"' in html.stdout


def test_a_run_that_is_not_archived_is_reported_from_prefect():
    """Fallback: the archive entry is gone (or not written yet); the report comes from events and artifacts."""
    with flaky_endpoint() as base:
        run = Background(audit_flow(), parameters={"base_url": base},
                         answers={"triage": {"clients_affected": 3, "scope": "inside"}, "approve": {"decision": "approve"}})
        state = run.join()
    run_id = str(state.state_details.flow_run_id)
    path = record_path(run_id)
    path.unlink()
    path.with_suffix(".html").unlink()
    _wait_for_event(run_id, "incident.closed")
    r = load_report(run_id, runbook=audit_runbook())
    assert r.source == "prefect" and r.outcome == "resolved" and r.severity == "2"
    triage = next(a for a in r.answers if a.step == "triage")
    assert triage.answered_by == "li-deputy"  # a script answers as the first person allowed to
    assert {f.field: f.label for f in triage.fields}["scope"] == "范围 Scope"
    assert "受影响终端：3" in next(d for d in r.documents if d.step == "final-report").document
    assert r.timeline.of("task.awaiting-retry") and r.timeline.of("step.answered")
    missing = runner.invoke(app, ["report", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 1
