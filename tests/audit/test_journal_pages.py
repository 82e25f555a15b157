"""An incident's journal read back from Prefect events while the incident still runs: each entry once.

A recovered incident's archive takes its earlier attempts' entries from the events (flows/record/archive.py
earlier_attempts) while the server still stores the running attempt's latest events. Read newest first, each
event stored meanwhile moved the later pages by one and the entry at a page's end was read twice: CI's worker-kill drill found an earlier
attempt's pages twice on the journal, though each pager got them once.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

from prefect.client.orchestration import SyncPrefectClient
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from flows.record.timeline import journal_from_events
from tasks.client import sync_client
from tasks.journal import Entry, emit_entry
from tests.alerts.procs import wait_for

pytestmark = pytest.mark.server


def _count(incident: str, kind: str) -> int:
    flt = EventFilter(event=EventNameFilter(name=[f"runbook.{kind}"]), resource=EventResourceFilter(id=[f"runbook.incident.{incident}"]))
    with sync_client() as client:
        return client.read_events(filter=flt, limit=1).total


def test_events_added_while_the_journal_is_read_are_not_read_twice(monkeypatch):
    incident = str(uuid4())
    begun = datetime.now(timezone.utc) - timedelta(minutes=5)
    for i in range(60):  # more than one page of 50
        emit_entry(incident, "journal-pages", Entry(at=begun + timedelta(seconds=i), kind="test.earlier", text=str(i)))
    wait_for(lambda: _count(incident, "test.earlier") == 60, 30, "60 events on the server", every=0.2)

    read_page = SyncPrefectClient.read_events_page
    added = []

    def the_incident_goes_on(self, url):
        # Between two pages the server stores five entries the running attempt made just before the read began
        # (Prefect stores events a moment after they arrive; what occurs after the read began is not read).
        if not added:
            for j in range(5):
                at = begun + timedelta(seconds=100 + j)
                added.append(emit_entry(incident, "journal-pages", Entry(at=at, kind="test.later", text=str(j))))
            wait_for(lambda: _count(incident, "test.later") == 5, 30, "the 5 new events on the server", every=0.2)
        return read_page(self, url)

    monkeypatch.setattr(SyncPrefectClient, "read_events_page", the_incident_goes_on)
    journal = journal_from_events(incident)
    earlier = [e.text for e in journal if e.kind == "test.earlier"]
    assert added, "the journal was read in one page: nothing was added between pages"
    assert earlier == [str(i) for i in range(60)], earlier  # each once, in order
    assert [e.text for e in journal if e.kind == "test.later"] == ["0", "1", "2", "3", "4"]  # and none lost
