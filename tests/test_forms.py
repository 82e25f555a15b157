"""The Resume form as Prefect renders it: choices by their labels, optional fields plain, answers still valid by any path."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from prefect._internal.pydantic.v2_schema import create_v2_schema  # what tasks/people.py stores for the UI
from prefect.client.orchestration import get_client
from prefect.utilities.schema_tools.validation import validate

from flows.answers import answer_step
from flows.catalog import make_flow
from flows.record.archive import find_record
from integrations.contacts import load_directory
from runbooks.loader import load_file
from tasks.forms import form_model, validate_answer
from tests.drill import Background, wait_for_step

ROOT = Path(__file__).resolve().parent.parent
HOSPITAL = load_file(ROOT / "runbooks" / "hospital-his-outage.yaml")
UI_DRILL = ROOT / "tests" / "fixtures" / "audit" / "ui-drill.yaml"


def _schema(step_id: str, runbook=HOSPITAL) -> dict:
    model = form_model(runbook.step(step_id), kind="manual")
    return create_v2_schema(model.__name__, model_base=model)


def test_a_choice_shows_its_labels_first_and_takes_a_label_or_a_value():
    symptom = _schema("record-report")["properties"]["symptom"]
    labels, values = symptom["anyOf"]
    assert labels["enum"][3] == "不能访问网络 / No network access" and "no-network" not in labels["enum"]
    assert values["enum"][3] == "no-network"
    assert symptom["default"] == "不能访问网络 / No network access"  # the form opens on the default's label
    model = form_model(HOSPITAL.step("record-report"), kind="manual")
    by_label = validate_answer(model, {"answered_by": "x", "station": "A", "symptom": "不能访问网络 / No network access"})
    by_value = validate_answer(model, {"answered_by": "x", "station": "A", "symptom": "no-network"})
    assert by_label["symptom"] == by_value["symptom"] == "no-network"
    with pytest.raises(ValueError):
        validate_answer(model, {"answered_by": "x", "station": "A", "symptom": "No network"})


def test_an_approval_lists_its_decisions_by_label():
    model = form_model(HOSPITAL.step("record-report"), kind="approval")
    decision = create_v2_schema(model.__name__, model_base=model)["properties"]["decision"]
    assert decision["anyOf"][0]["enum"] == ["批准 / Approve", "驳回 / Reject"] and decision["title"] == "决定 Decision"
    assert validate_answer(model, {"answered_by": "x", "station": "A", "decision": "驳回 / Reject"})["decision"] == "reject"
    assert validate_answer(model, {"answered_by": "x", "station": "A", "decision": "approve"})["decision"] == "approve"


def test_the_server_accepts_the_forms_spelling_and_the_value_and_refuses_others():
    schema = _schema("record-report")
    ok = {"answered_by": "x", "station": "A"}
    assert validate({**ok, "symptom": "不能访问网络 / No network access"}, schema) == []
    assert validate({**ok, "symptom": "no-network"}, schema) == []
    assert validate({**ok, "symptom": "no network"}, schema) != []


def test_optional_fields_are_plain_and_not_required():
    schema = _schema("record-report")
    reported_at = schema["properties"]["reported_at"]
    assert "anyOf" not in reported_at and reported_at["type"] == "string" and reported_at["format"] == "date-time"
    assert "reported_at" not in schema["required"] and "symptom" not in schema["required"]
    assert "CST (UTC+08:00)" in reported_at["description"]  # the site's zone, said on the form
    assert validate({"answered_by": "x", "station": "A"}, schema) == []  # left out: fine
    for props in (s["properties"] for s in (_schema(sid) for sid in ("record-report", "triage"))):
        assert not [name for name, p in props.items() if {"type": "null"} in p.get("anyOf", [])]


def test_a_time_answered_without_an_offset_is_the_sites_time():
    model = form_model(HOSPITAL.step("record-report"), kind="manual")
    answer = validate_answer(model, {"answered_by": "x", "station": "A", "reported_at": datetime(2026, 11, 30, 9, 30)})
    assert answer["reported_at"] == "2026-11-30T09:30:00+08:00"
    assert datetime.fromisoformat(answer["reported_at"]).tzinfo.utcoffset(None) == ZoneInfo("Asia/Shanghai").utcoffset(datetime(2026, 11, 30))


@pytest.mark.server
def test_the_run_stores_the_labelled_form_and_an_answer_through_the_uis_api_completes_the_step():
    flow = make_flow(load_file(UI_DRILL, load_directory(ROOT / "config" / "contacts.yaml")))
    run = Background(flow, drill=True, incident="by-label")
    run_id = wait_for_step("record-fault", label="by-label", seconds=60).flow_run_id
    with get_client(sync_client=True) as client:
        stored = json.loads(client.read_flow_run_input(UUID(run_id), "paused-record-fault-1-schema"))
        assert stored["properties"]["scope"]["anyOf"][0]["enum"] == ["内部 / Inside", "外部 / Outside"]
        result = client.resume_flow_run(UUID(run_id), run_input={"answered_by": "li-deputy", "clients_affected": 3,
                                                                  "scope": "外部 / Outside"})  # what the UI's Submit sends
    assert result.status.value == "ACCEPT", result.details
    state = run.join()
    assert state.is_completed() and state.name == "Completed"
    assert find_record(run_id).steps["record-fault"]["scope"] == "outside"


@pytest.mark.server
def test_an_answer_by_value_through_the_cli_path_still_completes_the_step():
    flow = make_flow(load_file(UI_DRILL, load_directory(ROOT / "config" / "contacts.yaml")))
    run = Background(flow, drill=True, incident="by-value")
    run_id = wait_for_step("record-fault", label="by-value", seconds=60).flow_run_id
    result = answer_step(run_id, by="li-deputy", values={"clients_affected": "3", "scope": "inside"})
    assert result.ok, result.message
    assert run.join().name == "Completed"
    assert find_record(run_id).steps["record-fault"]["scope"] == "inside"


def test_an_answer_that_comes_as_the_run_pauses_waits_for_its_form(monkeypatch, slept):
    """A run writes its form a moment after it pauses; an answer in between must still be read with the form
    ("yes" for a yes/no field is a boolean then), not sent to Prefect as typed (CI saw it refused)."""
    import flows.answers as answers

    schema = {"properties": {"stable": {"type": "boolean"}}}
    reads = []

    def read_input(client, run_id, key):
        reads.append(key)
        return json.dumps(schema) if len(reads) >= 3 else None  # there on the third look

    class Run:
        id = UUID(int=1)

        class state:
            class state_details:
                run_input_keyset = {"schema": "paused-confirm-1-schema"}

    monkeypatch.setattr(answers, "read_input", read_input)
    assert answers._form_schema(None, Run) == schema and slept == [0.1, 0.1]
    assert answers._coerce({"stable": "yes"}, schema)["stable"] is True

    reads.clear()
    Run.state.state_details.run_input_keyset = {}
    assert answers._form_schema(None, Run) == {} and reads == []  # a pause without a form: nothing to wait for
