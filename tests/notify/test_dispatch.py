"""The delivery policy with stand-in channels: retries, backoff, Retry-After, fallback, records, scrubbing."""

from __future__ import annotations

import pytest

from integrations.contacts import Address, Person
from integrations.notify import CHANNELS, Channel, ChannelError, deliver
from integrations.notify.base import Message
from integrations.notify.dispatch import RetryPolicy
from integrations.notify.redact import mask_url, scrub

MSG = Message(incident_id="run-1", runbook_id="r", title="t", text="x")


@pytest.fixture
def scripted(monkeypatch):
    """Register a channel 'scripted' whose send() raises or returns the next item of `script`."""
    script: list = []
    calls: list[str] = []

    class Scripted(Channel):
        name = "scripted"

        def secrets(self):
            return ["hunter2-secret"]

        def send(self, message, to):
            calls.append(to)
            step = script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step

    monkeypatch.setitem(CHANNELS, "scripted", Scripted)
    return script, calls


def person(*channels: str) -> Person:
    return Person(id="p1", name="P", channels=[Address(channel=c, to=f"{c}-addr") for c in channels])


def test_retry_after_is_honoured_and_backoff_grows(scripted):
    script, _ = scripted
    script += [ChannelError("busy"), ChannelError("slow down", retry_after=7), ChannelError("busy"), "id-1"]
    waits = []

    records = deliver(MSG, [person("scripted")], policy=RetryPolicy(attempts=4, backoff_seconds=1, backoff_factor=3), sleep=waits.append)

    assert waits == [1, 7, 9]
    assert [(d.outcome, d.attempt) for d in records] == [("failed", 1), ("failed", 2), ("failed", 3), ("sent", 4)]
    assert records[-1].provider_id == "id-1"


def test_backoff_is_capped_and_long_retry_after_means_fall_back(scripted):
    script, _ = scripted
    policy = RetryPolicy(attempts=5, backoff_seconds=10, backoff_factor=10, max_wait_seconds=15)
    assert policy.wait_before(2, ChannelError("x")) == 15
    assert policy.wait_before(1, ChannelError("x", retry_after=15)) == 15
    assert policy.wait_before(1, ChannelError("x", retry_after=16)) is None
    assert policy.wait_before(1, ChannelError("x", permanent=True)) is None
    assert policy.wait_before(5, ChannelError("x")) is None


def test_every_person_gets_a_record_even_when_nothing_works(scripted):
    script, _ = scripted
    script += [ChannelError("no", permanent=True)]
    nobody = Person(id="p2", name="Q", channels=[])
    ghost = Person(id="p3", name="R", channels=[Address(channel="pigeon", to="roof")])

    records = deliver(MSG, [person("scripted"), nobody, ghost])

    assert [(d.person, d.channel, d.outcome) for d in records] == [
        ("p1", "scripted", "failed"), ("p2", "none", "failed"), ("p3", "pigeon", "failed")]
    assert records[1].error == "person has no channels" and "no channel 'pigeon'" in records[2].error


def test_unexpected_exceptions_are_recorded_scrubbed_and_fall_back(scripted):
    script, _ = scripted
    script += [RuntimeError("boom with hunter2-secret and xoxb-123-abc in it")]

    records = deliver(MSG, [person("scripted", "log")])

    assert [(d.channel, d.outcome) for d in records] == [("scripted", "failed"), ("log", "sent")]
    assert records[0].error == "unexpected RuntimeError: boom with *** and *** in it"


def test_misconfigured_channel_is_named_without_echoing_the_setting(monkeypatch):
    monkeypatch.setenv("RUNBOOK_DINGTALK_ROBOTS", '{"ops": {"secret": "SECleaked"}}')  # no webhook: invalid

    records = deliver(MSG, [Person(id="p", name="P", channels=[Address(channel="dingtalk", to="ops")])])

    assert records[0].outcome == "failed" and "misconfigured" in records[0].error
    assert "SECleaked" not in records[0].error


def test_mask_url_and_scrub():
    assert mask_url("https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1&sign=xyz") == \
        "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=***&sign=***"
    assert mask_url("https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") == \
        "https://open.feishu.cn/open-apis/bot/v2/hook/***"
    assert mask_url("https://user:pw@example.org:8443/x") == "https://example.org:8443/x"
    assert scrub("token xoxb-1-2-3 and ?key=abc&x=1 and Authorization: Bearer qwerty", ["nothing"]) == \
        "token *** and ?key=***&x=1 and Authorization: ***"
