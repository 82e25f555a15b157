"""Paging end to end: a runbook flow on the real Prefect server pages people on (fake) Slack and Twilio,
escalates when nobody acknowledges, and is answered through the app's Slack and Twilio endpoints.

Order matters in this module: the last test looks for the secrets in everything the runs before it left.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

import flows.catalog  # noqa: F401  (load the site's runbooks with the site's contacts, before this module swaps them)
from flows.answers import answer_step
from flows.record.archive import archive_dir, find_record
from flows.catalog import make_flow
from integrations.contacts import load_directory
from integrations.notify import asks
from runbooks.loader import load_file
from runbooks.settings import get_settings
from tests.drill import Background as _Background, pause_key, wait_for_step, waiting  # noqa: F401
from tests.notify_e2e.conftest import (ALICE, BOB, CAROL, DRILL, all_secret_values, slack_click, slack_recipient,
                                       sms_reply, text_files)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notify"
DRILL_MARK = "[演练 DRILL]"

pytestmark = pytest.mark.server


def runbook_flow(name: str):
    return make_flow(load_file(FIXTURES / f"{name}.yaml", load_directory(get_settings().contacts_file)))


class Background(_Background):
    def __init__(self, flow, **kwargs):
        super().__init__(flow, test_tags=("test", "notify-e2e"), **kwargs)


@pytest.fixture(autouse=True)
def cancel_leftover_runs():
    """A failed test must not leave its run waiting (and logging) until the interpreter exits."""
    yield
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelled

    for bg in Background.started:
        if bg.thread.is_alive() and bg.label:
            with get_client(sync_client=True) as client:
                for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=bg.label))):
                    if run.state and not run.state.is_final():
                        client.set_flow_run_state(run.id, Cancelled(message="test failed"), force=True)
            bg.thread.join(10)
    Background.started.clear()


def wait_until(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def slack_pages(platform, since: float = 0.0):
    """(arrival, recipient user id, body) of every chat.postMessage since a moment."""
    return [(at, slack_recipient(seen), seen.json) for at, seen in platform.since(since) if seen.path.endswith("chat.postMessage")]


def sms_pages(platform, since: float = 0.0):
    return [(at, seen.form["To"], seen.form["Body"]) for at, seen in platform.since(since) if seen.path.endswith("/Messages.json")]


def answer_buttons(body: dict) -> list[dict]:
    return [e for b in body["blocks"] if b["type"] == "actions" for e in b["elements"] if "value" in e]


def page_for(body: dict, step: str) -> bool:
    return any(json.loads(b["value"]).get("s") == step for b in answer_buttons(body))


def sms_code(body: str) -> str:
    match = re.search(r"\[([A-Z2-7]{4})\]", body)
    assert match, f"no reply code in the SMS: {body!r}"
    return match.group(1)


# ---------------------------------------------------------------- the chain, for real recipients


def test_unacknowledged_page_escalates_then_slack_and_sms_answers_resume_it(notify_env, platforms, app, evidence):
    slack, twilio = platforms["slack"], platforms["twilio"]
    label = f"chain-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    run = Background(runbook_flow("page-chain"), drill=False, incident=label)

    # 1. Alice (first responder, Slack first) is paged with an Acknowledge button; the step waits.
    step = wait_for_step("ack-first", label=label)
    run_id = step.flow_run_id
    evidence.run_ids.append(run_id)
    assert set(step.may_answer) == {"alice", "bob"}
    alice_at, _, alice_page = wait_until(lambda: next((p for p in slack_pages(slack, started) if p[1] == ALICE["slack"]), None),
                                         10, "the page to Alice")
    assert DRILL_MARK not in alice_page["text"]
    (button,) = answer_buttons(alice_page)
    assert json.loads(button["value"]) == {"i": run_id, "s": "ack-first", "c": "ack"}

    # 2. Nobody acknowledges: after 2 s (not before) the backup tier pages Bob on his first channel, SMS.
    time.sleep(max(0.0, alice_at + 1.5 - time.monotonic()))
    assert not [p for p in sms_pages(twilio, started) if p[1] == BOB["phone"]], "Bob was paged before the 2 s tier"
    assert not [p for p in slack_pages(slack, started) if p[1] == BOB["slack"]]
    bob_at, _, bob_sms = wait_until(lambda: next((p for p in sms_pages(twilio, started) if p[1] == BOB["phone"]), None),
                                    10, "the escalation page to Bob")
    assert 2.0 <= bob_at - alice_at < 2.0 + 3.0, f"escalated after {bob_at - alice_at:.2f} s"
    assert "Reply 1" in bob_sms or "回复 1" in bob_sms
    first_code = sms_code(bob_sms)
    assert not [p for p in slack_pages(slack, started) if p[1] == CAROL["slack"]] + \
               [p for p in sms_pages(twilio, started) if p[1] == CAROL["phone"]], "Carol holds none of the roles"

    # 3. Refused: a forged Slack signature, an unknown Slack user, a known person who may not answer.
    value = button["value"]
    assert slack_click(app, ALICE["slack"], value, secret="not-the-signing-secret").status_code == 403
    unknown = slack_click(app, "U0STRANGER", value)
    assert unknown.status_code == 200 and unknown.json()["ok"] is False
    assert "not in the contacts directory" in unknown.json()["message"]
    carol = slack_click(app, CAROL["slack"], value)
    assert carol.status_code == 200 and carol.json()["ok"] is False
    assert "may not answer" in carol.json()["message"]
    unknown_sms = sms_reply(app, "+15559999999", f"1 {first_code}")
    assert unknown_sms.status_code == 200 and "not in the contacts directory" in unknown_sms.text
    time.sleep(1.0)  # two poll periods: a wrongly accepted answer would have resumed the run by now
    assert waiting("ack-first", run_id=run_id), "a refused answer must leave the step waiting"
    assert pause_key(run_id) == "ack-first-1"

    # 4. Alice clicks Acknowledge in Slack: the step resumes, answered by her.
    done = slack_click(app, ALICE["slack"], value)
    assert done.status_code == 200 and done.json()["ok"] is True, done.json()
    assert first_code not in {a["code"] for a in asks.pending(BOB["phone"])}, "answered: Bob's SMS reply no longer goes to it"
    # ... and her page in Slack now says she acknowledged it, with no button left to press.
    updates = wait_until(lambda: [seen.json for _, seen in slack.since(started) if seen.path.endswith("chat.update")], 10,
                         "the update of Alice's page")
    assert [u["channel"] for u in updates] == ["D" + ALICE["slack"][1:]] and answer_buttons(updates[0]) == []
    assert "爱丽丝 Alice" in updates[0]["text"] and "确认收到" in updates[0]["text"]

    # 5. The next step pages Bob by SMS; a reply from his phone quoting the code acknowledges it.
    wait_for_step("ack-backup", run_id=run_id)
    second_at, _, second_sms = wait_until(
        lambda: next((p for p in sms_pages(twilio, bob_at + 0.001) if p[1] == BOB["phone"]), None), 10, "the page to Bob for ack-backup")
    code = sms_code(second_sms)
    assert code != first_code
    assert sms_reply(app, BOB["phone"], f"1 {code}", token="forged-auth-token").status_code == 403
    alice_tries = slack_click(app, ALICE["slack"], json.dumps({"i": run_id, "s": "ack-backup", "c": "ack"}))
    assert alice_tries.json()["ok"] is False and "may not answer" in alice_tries.json()["message"]
    assert "not in the contacts directory" in sms_reply(app, "+15559999999", f"ok {code}").text
    time.sleep(1.0)
    assert waiting("ack-backup", run_id=run_id), "a refused answer must leave the step waiting"

    reply = sms_reply(app, BOB["phone"], f"1 {code}")
    assert reply.status_code == 200 and "✅" in reply.text, reply.text

    state = run.join()
    assert state.is_completed() and state.name == "Completed", state.message

    # 6. The archive says who answered each step, and the journal shows the chain in order.
    record = find_record(run_id)
    assert record is not None, f"no archived record for {run_id} under {archive_dir()}"
    assert record.steps["ack-first"]["answered_by"] == "alice"
    assert record.steps["ack-first"]["acknowledged"] is True
    assert record.steps["ack-backup"]["answered_by"] == "bob"
    assert [(e.step, e.actor) for e in record.entries("step.answered")] == [("ack-first", "alice"), ("ack-backup", "bob")]
    kinds = record.kinds()
    assert kinds.index("escalation.tier") < kinds.index("step.answered")
    sent = [(e.step, e.data["person"], e.data["channel"]) for e in record.entries("page.sent")]
    assert sent == [("ack-first", "alice", "slack"), ("ack-first", "bob", "sms"), ("ack-backup", "bob", "sms")]
    assert not record.entries("page.failed") and not record.entries("page.unreached")


# ---------------------------------------------------------------- a drill


def test_a_drill_pages_only_the_drill_desk_and_marks_every_page(notify_env, platforms, app, evidence):
    slack, twilio = platforms["slack"], platforms["twilio"]
    label = f"drill-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    run = Background(runbook_flow("page-chain"), drill=True, incident=label, answers={"ack-backup": {"acknowledged": True}})

    step = wait_for_step("ack-first", label=label)
    run_id = step.flow_run_id
    evidence.run_ids.append(run_id)
    # The first page and, 2 s later, the escalation tier: both to the drill desk, never to Alice or Bob.
    wait_until(lambda: len([p for p in slack_pages(slack, started) if p[1] == DRILL["slack"]]) >= 2, 10,
               "the drill desk's first page and its escalation page")
    first = next(p for p in slack_pages(slack, started) if p[1] == DRILL["slack"])
    (button,) = answer_buttons(first[2])

    # The drill desk relays; Alice (who may answer) acknowledges from Slack with the drill page's button.
    done = slack_click(app, ALICE["slack"], button["value"])
    assert done.json()["ok"] is True, done.json()
    state = run.join()
    assert state.is_completed(), state.message
    ended = time.monotonic()

    pages = [p for p in slack_pages(slack, started) if p[0] <= ended]
    assert {who for _, who, _ in pages} == {DRILL["slack"]}
    assert len(pages) == 3, "first page, escalation, second step"
    for _, _, body in pages:
        assert body["text"].startswith(DRILL_MARK) and body["blocks"][0]["text"]["text"].startswith(DRILL_MARK)
    assert not [p for p in sms_pages(twilio, started) if p[0] <= ended], "a drill sends no SMS to anyone here"

    record = find_record(run_id)
    assert record.drill is True
    assert {e.data["person"] for e in record.entries("page.sent")} == {"drill-desk"}
    failed = record.entries("page.failed")
    assert failed and {e.data["channel"] for e in failed} == {"dingtalk"}, "the DingTalk robot is down; Slack took over"
    assert record.steps["ack-first"]["answered_by"] == "alice"
    assert record.steps["ack-backup"]["answered_by"] == "bob"  # scripted: the first person allowed to


# ---------------------------------------------------------------- a track's own run


def test_a_button_on_a_page_from_a_parallel_track_resumes_the_tracks_run(notify_env, platforms, app, evidence):
    """A track is a child flow run: it, not the incident's run named in the button, is what pauses."""
    slack = platforms["slack"]
    label = f"track-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    run = Background(runbook_flow("page-track"), drill=False, incident=label)

    page = wait_until(lambda: next((p for p in slack_pages(slack, started) if p[1] == ALICE["slack"] and page_for(p[2], "ack-in-track")), None),
                      20, "the page from the track")
    (button,) = answer_buttons(page[2])
    incident_id = json.loads(button["value"])["i"]
    track_step = wait_for_step("ack-in-track")
    evidence.run_ids += [incident_id, track_step.flow_run_id]
    assert track_step.flow_run_id != incident_id, "the track's run is a child run of the incident"

    refused = slack_click(app, BOB["slack"], button["value"])
    assert refused.json()["ok"] is False and "may not answer" in refused.json()["message"]
    done = slack_click(app, ALICE["slack"], button["value"])
    assert done.json()["ok"] is True, done.json()

    state = run.join()
    assert state.is_completed() and state.name == "Completed", state.message
    record = find_record(incident_id)
    assert record.steps["ack-in-track"]["answered_by"] == "alice"
    assert [(e.step, e.actor) for e in record.entries("step.answered")] == [("ack-in-track", "alice")]


# ---------------------------------------------------------------- a form no button can fill


def test_pages_for_a_manual_form_offer_no_one_tap_answer(notify_env, platforms, app, evidence):
    """A checklist with fields is answered in the run's UI: no Acknowledge button, reply code or answer link."""
    slack, twilio = platforms["slack"], platforms["twilio"]
    label = f"manual-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    run = Background(runbook_flow("page-manual"), drill=False, incident=label)
    step = wait_for_step("count-damage", label=label)
    run_id = step.flow_run_id
    evidence.run_ids.append(run_id)

    _, _, alice_page = wait_until(lambda: next((p for p in slack_pages(slack, started) if p[1] == ALICE["slack"]), None), 10, "the page to Alice")
    _, _, bob_sms = wait_until(lambda: next((p for p in sms_pages(twilio, started) if p[1] == BOB["phone"]), None), 10, "the page to Bob")
    assert answer_buttons(alice_page) == []
    assert "/notify/link/" not in json.dumps(alice_page, ensure_ascii=False)
    assert run_id in json.dumps(alice_page["blocks"]), "the page links to the run, where the form is"
    assert not re.search(r"\[[A-Z2-7]{4}\]", bob_sms) and "Reply" not in bob_sms and "回复" not in bob_sms
    assert "/notify/link/" not in bob_sms
    no_question = sms_reply(app, BOB["phone"], "1")
    assert "no question waiting" in no_question.text
    assert waiting("count-damage", run_id=run_id)

    result = answer_step(run_id, by="bob", values={"devices": "4"}, step="count-damage")
    assert result.ok, result.message
    state = run.join()
    assert state.is_completed(), state.message
    assert find_record(run_id).steps["count-damage"]["devices"] == 4


# ---------------------------------------------------------------- no secret anywhere


def _prefect_evidence(run_ids: list[str]) -> dict[str, str]:
    """Everything the server keeps about the suite's runs: logs, artifacts, runs, inputs, incident events."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    out: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        logs, offset = [], 0
        while True:
            page = client.read_logs(limit=200, offset=offset)
            logs += page
            offset += len(page)
            if len(page) < 200:
                break
        out["prefect logs"] = "\n".join(f"{log.flow_run_id} {log.name} {log.message}" for log in logs)

        artifacts, offset = [], 0
        while True:
            page = client.read_artifacts(limit=200, offset=offset)
            artifacts += page
            offset += len(page)
            if len(page) < 200:
                break
        out["artifacts"] = "\n".join(json.dumps(a.model_dump(mode="json"), ensure_ascii=False) for a in artifacts)

        ids = {UUID(r) for r in run_ids}
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=list(ids))))
        ids |= {c.id for c in children}
        runs = [client.read_flow_run(i) for i in ids]
        out["flow runs"] = "\n".join(r.model_dump_json() for r in runs)
        inputs = [item for i in ids for item in client.filter_flow_run_input(flow_run_id=i, key_prefix="", limit=1000, exclude_keys=set())]
        out["flow run inputs"] = "\n".join(f"{i.key} {i.value}" for i in inputs)

        resp = client.request("POST", "/events/filter", json={"filter": {"any_resource": {"id_prefix": ["runbook.incident."]}}, "limit": 50})
        events, data = [], resp.json()
        while True:
            events += data.get("events", [])
            if not data.get("next_page"):
                break
            data = client._client.get(str(data["next_page"])).json()
        out["incident events"] = "\n".join(json.dumps(e, ensure_ascii=False) for e in events)
    return out


def _reports(run_ids: list[str]) -> dict[str, str]:
    """The incident reports people are handed, in every format, when the report module is there."""
    try:
        from flows.record.report import FORMATS, build_report, render
    except ImportError:
        return {}
    out = {}
    for run_id in run_ids:
        record = find_record(run_id)
        if record is None:
            continue
        report = build_report(record)
        for fmt in FORMATS:
            out[f"report {run_id} .{fmt}"] = render(report, fmt)
    return out


def test_no_secret_in_any_log_artifact_event_or_archived_report(notify_env, evidence, caplog):
    if not evidence.run_ids:
        pytest.skip("run with the earlier tests of this module: they make the runs this one searches")
    evidence.api.flush()  # the API log handler sends in batches
    time.sleep(1.0)

    haystacks: dict[str, str] = {"captured log lines": "\n".join(evidence.lines),
                                 "caplog": "\n".join(caplog.text.splitlines())}
    haystacks.update(_prefect_evidence(evidence.run_ids))
    for path in text_files(archive_dir()):
        haystacks[f"archive {path.relative_to(archive_dir())}"] = path.read_text(encoding="utf-8", errors="replace")
    haystacks.update(_reports(evidence.run_ids))

    # The search must have something to search: journal lines of our runs, and their archive files.
    assert any("[page.sent]" in line for line in evidence.lines)
    assert any(run_id in haystacks["prefect logs"] for run_id in evidence.run_ids)
    assert "page.failed" in haystacks["incident events"]
    assert any(run_id in name for run_id in evidence.run_ids for name in haystacks)
    # The DingTalk failure was logged, with its URL masked.
    assert any("dingtalk" in line and "failed" in line for line in evidence.lines)

    leaks = [f"{what} in {where}: …{text[max(0, i - 80):i + 80]}…"
             for where, text in haystacks.items() for what, value in all_secret_values().items()
             if (i := text.find(value)) >= 0]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
