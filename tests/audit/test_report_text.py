"""What people read in a report: text as written in Markdown (escaped only in HTML), times in the site's zone.

Built from a hand-made archive record: no run needed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from cli.main import app
from flows.record.archive import FieldOutline, IncidentRecord, PlanOutline, RuleOutline, StepOutline, write_record
from flows.record.report import build_report, render_html, render_markdown
from integrations.localtime import local_time, site_zone
from tasks.journal import Entry

TRICKY = """Tom's "A&B" <script>"""
STARTED = datetime(2026, 11, 30, 4, 59, 16, 592496, tzinfo=timezone.utc)


def _record(run_id: str = "00000000-0000-4000-8000-000000000001") -> IncidentRecord:
    at = lambda s: datetime(2026, 11, 30, 5, 0, s, tzinfo=timezone.utc)  # noqa: E731
    return IncidentRecord(
        flow_run_id=run_id, runbook="text-drill", title_zh="文本演练", title_en="Text drill", drill=True,
        severity="1", params={}, started=STARTED, ended=at(30), outcome="resolved", message=f"done: {TRICKY}", steps={},
        journal=[
            Entry(at=at(1), kind="step.started", step="check", text=TRICKY),
            Entry(at=at(2), kind="step.answered", step="check", actor="li-deputy", text=f"note={TRICKY}",
                  data={"answer": {"answered_by": "li-deputy", "note": TRICKY, "seen_at": "2026-11-30T05:00:00+00:00",
                                   "answered_at": "2026-11-30T05:00:02+00:00"}}),
            Entry(at=at(3), kind="deadline.missed", step="first-report", text="missed",
                  data={"due": "2026-11-30T04:59:16.592496+00:00"}),
        ],
        plan=PlanOutline(steps={"check": StepOutline(id="check", kind="manual", title_zh=f"检查 {TRICKY}", title_en=TRICKY,
                                                     fields=[FieldOutline(id="note", label_zh="备注", label_en="Note", type="text"),
                                                             FieldOutline(id="seen_at", label_zh="发现时间", label_en="Seen at", type="datetime")])},
                         deadlines=[RuleOutline(id="first-report", title_zh="初报", title_en="First report")]),
    )


def test_markdown_shows_text_as_written_and_html_escapes_it():
    report = build_report(_record())
    md, html = render_markdown(report), render_html(report)
    assert f"检查 {TRICKY} / {TRICKY}" in md  # the step title, in the answers' heading
    assert f"| {TRICKY} |" in md  # the answer, in its table
    assert "&#39;" not in md and "&amp;" not in md and "&lt;" not in md and "&#34;" not in md and "&quot;" not in md
    assert TRICKY not in html and "<script>" not in html
    assert "Tom&#39;s &#34;A&amp;B&#34; &lt;script&gt;" in html


def test_times_people_read_are_in_the_site_zone_named_to_the_second():
    assert site_zone() == ZoneInfo("Asia/Shanghai")  # the shipped config/site.yaml
    assert local_time(STARTED) == "2026-11-30 12:59:16 CST (UTC+08:00)"
    assert local_time("2026-11-30T04:59:16.592496+00:00", ZoneInfo("UTC")) == "2026-11-30 04:59:16 UTC"
    report = build_report(_record())
    for text in (render_markdown(report), render_html(report)):
        assert "开始 Started" in text and "2026-11-30 12:59:16 CST (UTC+08:00)" in text  # the start
        assert "2026-11-30 13:00:02 CST (UTC+08:00)" in text  # a timeline row, and when it was answered
        assert "2026-11-30 13:00:00 CST (UTC+08:00)" in text  # a datetime answer
        assert "04:59:16.592496+00:00" not in text and "UTC)" not in text.replace("(UTC+08:00)", "")
    deadline = next(d for d in report.deadlines if d.id == "first-report")
    assert deadline.due == "2026-11-30T04:59:16.592496+00:00"  # the record keeps machine time; only what is shown changes


def test_history_shows_the_start_in_the_site_zone_and_its_json_in_utc(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_INCIDENTS_DIR", str(tmp_path))
    from runbooks.settings import get_settings
    get_settings.cache_clear()
    try:
        write_record(_record())
        shown = CliRunner().invoke(app, ["history"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        assert "2026-11-30 12:59:16 CST (UTC+08:00)" in shown.output
        as_json = CliRunner().invoke(app, ["history", "--json"])
        assert json.loads(as_json.stdout)[0]["started"] == "2026-11-30T04:59:16+00:00"
        # --since is a day in the site's zone: 2026-11-30 Beijing time began at 16:00 UTC the day before
        assert "1 incident" in CliRunner().invoke(app, ["history", "--since", "2026-11-30"]).output
        assert "0 incident" in CliRunner().invoke(app, ["history", "--since", "2026-12-01"]).output
    finally:
        get_settings.cache_clear()
