"""What an incident leaves behind when it closes.

- a Markdown artifact on its run: the summary and the full timeline (journal and
  Prefect's history so far), for whoever opens the run in the UI;
- the archive entry: the JSON record and the HTML report beside it, so the record
  outlives Prefect's retention and a deleted run;
- the progress artifact brought to its final value.

Nothing here may fail the incident: each part that cannot be written is logged and skipped.
"""

from __future__ import annotations

import logging

from prefect.artifacts import create_markdown_artifact

from flows.record.archive import record_of, write_record
from flows.record.progress import finish_progress
from flows.record.report import build_report, render_html, render_markdown
from flows.record.timeline import prefect_history
from tasks.incident import Incident

logger = logging.getLogger("runbook.publish")


def timeline_artifact_key(runbook_id: str) -> str:
    return f"incident-{runbook_id}"[:100]


def publish_incident(inc: Incident, outcome: str, message: str) -> None:
    """Leave the timeline on the run as an artifact and archive the incident (JSON + HTML)."""
    finish_progress(inc, outcome)
    try:
        history = prefect_history(inc.id)
    except Exception as exc:  # the journal alone still makes a report
        logger.warning("could not read the run's history from Prefect: %s", exc)
        history = []
    record = record_of(inc, outcome, message, history=history)
    report = build_report(record, source="archive")
    try:
        create_markdown_artifact(markdown=render_markdown(report), key=timeline_artifact_key(inc.runbook.id),
                                 description=f"事件时间线与总结 Timeline and summary of {inc.runbook.id}")
    except Exception as exc:
        logger.warning("could not publish the timeline artifact: %s", exc)
    try:
        html = render_html(report)
    except Exception as exc:
        logger.warning("could not render the HTML report: %s", exc)
        html = None
    try:
        write_record(record, html)
    except Exception as exc:
        logger.warning("could not archive the incident: %s", exc)

