"""Notify steps: page the people of some roles with a rendered message."""

from __future__ import annotations


def notify(incident, step) -> dict:
    text = incident.both(step.message)
    title = f"{incident.runbook.title.zh} · {incident.text(step.title, 'zh')}"
    deliveries = incident.page(step.to, text, step=step.id, title=title, answer_options=["ack"] if step.ack else None)
    sent = [d for d in deliveries if d.outcome == "sent"]
    return {"sent": len(sent), "failed": len(deliveries) - len(sent), "people": sorted({d.person for d in sent}), "text": text}
