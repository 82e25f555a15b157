"""Report steps: draft a document the plan requires from what the incident recorded, publish it, send it."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from runbooks.model import ReportStep
from tasks.incident import Incident
from tasks.steps import Walk, runs, step_task


@runs("report")
def run(inc: Incident, step: ReportStep, walk: Walk) -> dict:
    def draft(step_id: str) -> dict:
        document = "\n\n".join(part for part in (inc.text(step.document, "zh"), inc.text(step.document, "en")) if part)
        if inc.drill:
            document = "> **演练 DRILL**\n\n" + document
        try:
            create_markdown_artifact(markdown=document, key=f"{inc.runbook.id}-{step.id}"[:100], description=step.title.both())
        except Exception as exc:  # the draft is kept on the incident even if the artifact cannot be written
            inc.record("report.unpublished", str(exc), step=step.id)
        return {"document": document}

    state = step_task(step, draft, inc)(step.id, return_state=True)
    result = state.result()
    inc.record("report.drafted", step.title.both(), step=step.id, length=len(result["document"]))
    if step.to and state.name == "Cached":
        inc.record("report.sent", "already sent before the run restarted", step=step.id)
    elif step.to:
        title = f"{inc.runbook.title.zh} · {inc.text(step.title, 'zh')}"
        sent = [d for d in inc.page(step.to, result["document"], step=step.id, title=title) if d.outcome == "sent"]
        inc.record("report.sent", f"to {', '.join(step.to)}", step=step.id, people=sorted({d.person for d in sent}))
    return result
