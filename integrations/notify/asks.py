"""Questions sent by SMS that a text reply may answer.

An SMS reply carries only the sender's number and the text, so we remember, per
phone number, which incident/step each recent page asked about. A reply answers
the most recent one, or the one whose short code it quotes ("1 K7QF").
"""

from __future__ import annotations

import base64
import hashlib
import time

from integrations.notify.store import JsonStore, state_path

ASK_TTL_SECONDS = 24 * 3600
MAX_ASKS_PER_ADDRESS = 20


def code_for(incident_id: str, step_id: str | None) -> str:
    """Four letters that name a question in a reply; stable, so re-asks keep the same code."""
    digest = hashlib.sha256(f"{incident_id}/{step_id}".encode()).digest()
    return base64.b32encode(digest)[:4].decode()


def _store() -> JsonStore:
    return JsonStore(state_path("sms-asks"))


def remember(address: str, incident_id: str, step_id: str | None, options: list[str], language: str) -> str:
    code = code_for(incident_id, step_id)
    now = time.time()
    entry = {"code": code, "incident_id": incident_id, "step_id": step_id, "options": options, "language": language, "at": now}

    def add(old):
        kept = [a for a in (old or []) if a["code"] != code and now - a["at"] < ASK_TTL_SECONDS]
        return (kept + [entry])[-MAX_ASKS_PER_ADDRESS:]

    _store().update(address, add)
    return code


def pending(address: str) -> list[dict]:
    """Unexpired questions for this number, oldest first."""
    now = time.time()
    return [a for a in _store().get(address, []) if now - a["at"] < ASK_TTL_SECONDS]


def forget(address: str, code: str) -> None:
    _store().update(address, lambda old: [a for a in (old or []) if a["code"] != code])


def forget_everywhere(code: str) -> None:
    """The question was answered (by anyone, on any channel): no number's reply should go to it any more."""
    store = _store()
    for address, entries in store.load().items():
        if any(a.get("code") == code for a in entries or []):
            forget(address, code)
