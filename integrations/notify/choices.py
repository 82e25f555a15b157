"""The answers a page can ask for, how each channel labels them, and what they mean to a waiting step.

`ack` acknowledges; `approve` / `reject` decide an approval. The values are what
flows.answers.answer_step expects for the step's RunInput form.
"""

from __future__ import annotations

from typing import Any

ACK, APPROVE, REJECT = "ack", "approve", "reject"
KNOWN = (ACK, APPROVE, REJECT)

LABELS = {
    "zh": {ACK: "确认收到", APPROVE: "批准", REJECT: "驳回"},
    "en": {ACK: "Acknowledge", APPROVE: "Approve", REJECT: "Reject"},
}

# Words a person may text back; digits follow the order the options were offered in.
_WORDS = {
    ACK: {"ack", "ok", "okay", "yes", "y", "确认", "收到", "好"},
    APPROVE: {"approve", "approved", "yes", "y", "批准", "同意"},
    REJECT: {"reject", "rejected", "no", "n", "驳回", "拒绝", "不同意"},
}


def options_of(options: list[str], needs_answer: bool) -> list[str]:
    """The options actually offered: none unless an answer is needed; acknowledging when none are named.

    Options named but none of them known (the engine asks a manual checklist with ['answer'] and a failed
    step's lead with ['retry', 'continue', 'abort']) offer nothing: those forms are filled in the run's UI,
    and an Acknowledge button there would answer a form it cannot fill (or fill it with nothing but defaults).
    """
    if not needs_answer:
        return []
    if not options:
        return [ACK]
    return [o for o in options if o in KNOWN]


def label(choice: str, language: str) -> str:
    return LABELS.get(language, LABELS["en"]).get(choice, choice)


def values_for(choice: str) -> dict[str, Any]:
    """The RunInput values that answer a step with this choice."""
    if choice == ACK:
        return {"acknowledged": True}
    if choice in (APPROVE, REJECT):
        return {"decision": choice}
    raise ValueError(f"unknown answer '{choice}'")


def parse_reply(word: str, options: list[str]) -> str | None:
    """Map a typed or pressed answer ('1', 'ok', '批准') to one of `options`, or None."""
    word = word.strip().lower()
    if word.isdigit():
        n = int(word)
        return options[n - 1] if 1 <= n <= len(options) else None
    for option in options:
        if word in _WORDS.get(option, ()) or word == option:
            return option
    return None


def reply_hint(options: list[str], language: str) -> str:
    """'回复 1 批准 / 2 驳回' — the instruction appended to an SMS or spoken in a call."""
    parts = [f"{i} {label(o, language)}" for i, o in enumerate(options, 1)]
    if language == "zh":
        return "回复 " + " / ".join(parts)
    return "Reply " + " / ".join(parts)
