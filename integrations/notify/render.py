"""Plain and Markdown renderings of a Message shared by the chat robots and email."""

from __future__ import annotations

from integrations.notify import choices
from integrations.notify.base import Message

_LABELS = {
    "zh": {"runbook": "预案", "severity": "级别", "step": "当前步骤", "run": "打开运行记录", "answer": "答复"},
    "en": {"runbook": "Runbook", "severity": "Severity", "step": "Step", "run": "Open the run", "answer": "Answer"},
}


def cut_bytes(text: str, max_bytes: int) -> str:
    """Shorten to at most max_bytes of UTF-8 without splitting a character, marking the cut with '…'."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes - 3)].decode("utf-8", errors="ignore") + "…"


def facts(message: Message) -> list[tuple[str, str]]:
    lab = _LABELS[message.language]
    out = [(lab["runbook"], message.runbook_id)]
    if message.severity:
        out.append((lab["severity"], message.severity))
    if message.step_id:
        out.append((lab["step"], message.step_id))
    return out


def links(message: Message) -> list[tuple[str, str]]:
    lab = _LABELS[message.language]
    out = []
    if message.answer_url:
        options = choices.options_of(message.answer_options, message.needs_answer)
        what = " / ".join(choices.label(o, message.language) for o in options) or lab["answer"]
        out.append((what, message.answer_url))
    if message.run_url:
        out.append((lab["run"], message.run_url))
    return out


def markdown(message: Message, max_bytes: int) -> str:
    """Headline, facts, body, links; the body is what gets shortened when the platform's limit is reached."""
    head = f"### {message.headline()}\n\n" + "\n".join(f"**{k}**: {v}  " for k, v in facts(message))
    tail = "\n\n" + " | ".join(f"[{k}]({v})" for k, v in links(message)) if links(message) else ""
    room = max_bytes - len(head.encode()) - len(tail.encode()) - 2
    body = "\n\n" + cut_bytes(message.text, room - 2) if message.text and room > 8 else ""
    return cut_bytes(head + body + tail, max_bytes)


def plain(message: Message) -> str:
    lines = [message.headline(), ""] + [f"{k}: {v}" for k, v in facts(message)]
    if message.text:
        lines += ["", message.text]
    if links(message):
        lines += [""] + [f"{k}: {v}" for k, v in links(message)]
    return "\n".join(lines)
