"""What an incident leaves behind: a Markdown artifact on its run and an archive entry."""

from __future__ import annotations

import json
import logging

from flows.incident import Incident

logger = logging.getLogger("runbook.publish")


def timeline_markdown(inc: Incident, outcome: str, message: str) -> str:
    rb = inc.runbook
    lines = [
        f"# {rb.title.zh} / {rb.title.en}" + (" — 演练 DRILL" if inc.drill else ""),
        "",
        f"- 结果 Outcome: **{outcome}** — {message}",
        f"- 级别 Severity: {inc.level_label() or '—'}" + (f" ({inc.severity_reason})" if inc.severity_reason else ""),
        f"- 开始 Started: {inc.started.isoformat(timespec='seconds')}",
        "",
        "| 时间 Time (UTC) | 事件 Event | 步骤 Step | 人 Actor | 内容 Detail |",
        "|---|---|---|---|---|",
    ]
    for e in inc.journal:
        detail = e.text.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {e.at.strftime('%H:%M:%S')} | {e.kind} | {e.step or ''} | {e.actor or ''} | {detail} |")
    return "\n".join(lines)


def publish_incident(inc: Incident, outcome: str, message: str) -> None:
    """Leave the timeline on the run as an artifact. Failure to publish never fails the incident."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=timeline_markdown(inc, outcome, message), key=f"incident-{inc.runbook.id}",
                                 description=f"Timeline of {inc.runbook.id}")
    except Exception as exc:
        logger.warning("could not publish the timeline artifact: %s", exc)
    try:
        from flows.archive import archive_incident
    except ImportError:
        return
    try:
        archive_incident(inc, outcome, message)
    except Exception as exc:
        logger.warning("could not archive the incident: %s", exc)


def journal_json(inc: Incident) -> str:
    return json.dumps([e.model_dump(mode="json") for e in inc.journal], ensure_ascii=False, indent=2)
