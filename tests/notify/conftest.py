"""Fixtures for the notification tests: a clean RUNBOOK_ environment, fake platforms, a contacts file."""

from __future__ import annotations

import os
import pytest
import yaml

from runbooks.settings import get_settings
from tests.notify.fakes import FakeHTTP, FakeSMTP

CONTACTS = {
    "people": [
        {"id": "zhangwei", "name": "张伟 Zhang Wei", "roles": ["it-head"], "aliases": ["U0ZHANG"],
         "channels": [{"channel": "slack", "to": "U0ZHANG"}, {"channel": "sms", "to": "+8613800000001"},
                      {"channel": "voice", "to": "+8613800000001"}]},
        {"id": "li", "name": "李娜 Li Na", "roles": ["duty"],
         "channels": [{"channel": "sms", "to": "+8613800000002"}, {"channel": "email", "to": "li@example.org"}]},
    ],
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No RUNBOOK_ setting leaks in from the session; state and contacts live in tmp_path."""
    for key in list(os.environ):
        if key.startswith("RUNBOOK_") or key.startswith("TWILIO_"):
            monkeypatch.delenv(key)
    contacts = tmp_path / "contacts.yaml"
    contacts.write_text(yaml.safe_dump(CONTACTS, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("RUNBOOK_CONTACTS_FILE", str(contacts))
    monkeypatch.setenv("RUNBOOK_NOTIFY_BACKOFF_SECONDS", "0.01")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def fake_http():
    servers = []

    def make(default=None) -> FakeHTTP:
        servers.append(FakeHTTP(default))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def smtp():
    server = FakeSMTP()
    yield server
    server.close()
