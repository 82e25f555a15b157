"""Email against a tiny local SMTP server, through smtplib."""

from __future__ import annotations

from email import message_from_bytes, policy

from integrations.contacts import Address, Person
from integrations.notify import deliver
from integrations.notify.base import Message
from integrations.notify.dispatch import RetryPolicy


def setup(monkeypatch, smtp):
    monkeypatch.setenv("RUNBOOK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RUNBOOK_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("RUNBOOK_SMTP_SENDER", "runbook@example.org")
    monkeypatch.setenv("RUNBOOK_SMTP_TIMEOUT", "2")


def message(**kw) -> Message:
    base = dict(incident_id="run-3", runbook_id="fire-evacuation", title="三号楼火警", text="按预案疏散三号楼。",
                severity="I", drill=True, run_url="http://ui.local/runs/run-3",
                needs_answer=True, answer_url="https://runbook.example.org/notify/link/abc.def")
    return Message(**{**base, **kw})


def test_email_carries_drill_marker_body_and_links(monkeypatch, smtp):
    setup(monkeypatch, smtp)
    person = Person(id="li", name="李娜", channels=[Address(channel="email", to="li@example.org")])

    records = deliver(message(), [person])

    assert records[0].outcome == "sent" and records[0].provider_id.startswith("<")
    (mail,) = smtp.mails
    assert mail.sender == "runbook@example.org" and mail.recipients == ["li@example.org"]
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Subject"] == "[演练 DRILL] [I] 三号楼火警"
    body = parsed.get_content()
    assert "按预案疏散三号楼。" in body and "确认收到: https://runbook.example.org/notify/link/abc.def" in body
    assert "http://ui.local/runs/run-3" in body


def test_refused_recipient_falls_back(monkeypatch, smtp):
    setup(monkeypatch, smtp)
    smtp.refuse.add("gone@example.org")
    person = Person(id="li", name="李娜", channels=[Address(channel="email", to="gone@example.org"), Address(channel="log", to="duty")])

    records = deliver(message(), [person], policy=RetryPolicy(attempts=3))

    assert [(d.channel, d.outcome) for d in records] == [("email", "failed"), ("log", "sent")]
    assert "refused the address gone@example.org" in records[0].error


def test_unreachable_mail_server_is_retried_then_recorded(monkeypatch, smtp):
    setup(monkeypatch, smtp)
    smtp.close()
    person = Person(id="li", name="李娜", channels=[Address(channel="email", to="li@example.org")])
    waits = []

    records = deliver(message(), [person], policy=RetryPolicy(attempts=2, backoff_seconds=0.5), sleep=waits.append)

    assert waits == [0.5] and [d.outcome for d in records] == ["failed", "failed"]
    assert "could not send mail" in records[-1].error
