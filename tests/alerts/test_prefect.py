"""The intake against the session's real Prefect server: the real flows.launch, idempotency keys,
run states deciding open/closed, resolutions as flow run inputs, and events."""

from __future__ import annotations

import uuid

import pytest

from tests.alerts.conftest import drained, wait_until

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def probe_runbook() -> str:
    return make_probe()


def make_probe(runbook_id: str | None = None) -> str:
    """An unserved deployment `<id>/runbook` with the runbook flows' parameters: runs stay Scheduled (open)."""
    from prefect import flow

    runbook_id = runbook_id or f"intake-probe-{uuid.uuid4().hex[:8]}"

    @flow(name=runbook_id)
    def probe(parameters: dict | None = None, severity: str | None = None, drill: bool = False, time_scale: float = 1.0,
              auto: bool = False, answers: dict | None = None, incident: str | None = None, alert: dict | None = None):
        return None

    probe.to_deployment(name="runbook").apply()
    return runbook_id


@pytest.fixture
def real_client(make_settings, probe_runbook):
    """The receiver with the default hooks: flows.launch and the Prefect client."""
    from fastapi.testclient import TestClient

    from app.web import create_app

    settings = make_settings(routes=f"""
routes:
  - match: [alertname=ProbeDown]
    runbook: {probe_runbook}
    parameters: {{site: labels.site}}
    severity: {{critical: "1"}}
""")
    with TestClient(create_app(settings)) as client:
        yield client


def runs_of(runbook_id: str):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[runbook_id])))


def body(status: str = "firing", starts: str = "2024-05-01T08:00:00Z", group: str | None = None) -> dict:
    return {"version": "4", "groupKey": group or f"probe-{uuid.uuid4().hex[:6]}", "status": status, "alerts": [{
        "status": status, "labels": {"alertname": "ProbeDown", "site": "east", "severity": "critical"},
        "annotations": {"summary": "probe down"}, "startsAt": starts,
        "endsAt": "2024-05-01T09:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": "feedface00000001"}]}


def test_one_real_flow_run_per_group_and_episode(real_client, probe_runbook):
    from prefect import get_client
    from prefect.states import Completed

    group = f"probe-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        assert real_client.post("/alerts/alertmanager", json=body(group=group)).status_code == 202
    drained(real_client)
    (run,) = runs_of(probe_runbook)
    assert run.parameters["parameters"] == {"site": "east"} and run.parameters["severity"] == "1"
    assert run.parameters["alert"]["fingerprint"] == "feedface00000001"
    assert run.idempotency_key.endswith(":1") and f"runbook:{probe_runbook}" in run.tags
    assert run.state.is_scheduled()

    # the resolution reaches it as a flow run input
    real_client.post("/alerts/alertmanager", json=body("resolved", group=group))
    drained(real_client)
    from flows.launch import read_resolution

    assert read_resolution(run.id)["status"] == "resolved"

    # closed in Prefect; a new firing of the group is a new incident
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Completed(), force=True)
    real_client.post("/alerts/alertmanager", json=body(starts="2024-05-01T11:00:00Z", group=group))
    drained(real_client)
    runs = runs_of(probe_runbook)
    assert len(runs) == 2 and {r.idempotency_key[-2:] for r in runs} == {":1", ":2"}


def test_events_are_related_to_the_run(real_client, probe_runbook):
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventResourceFilter

    fingerprint = "feedface00000001"
    real_client.post("/alerts/alertmanager", json=body())
    drained(real_client)
    row = real_client.app.state.store.spool_rows()[-1]
    run_id = row["outcome"].split()[-1]

    def find():
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(resource=EventResourceFilter(id=[f"runbook.alert.{fingerprint}"])), limit=50)
        return [e for e in page.events if any(r.id == f"prefect.flow-run.{run_id}" for r in e.related)]

    (event,) = wait_until(find, 30, "the alert event on the server")
    assert event.event == "runbook.alert.firing" and event.payload["outcome"] == "started"
    assert event.payload["alert"]["labels"]["site"] == "east"


def test_run_state_decides_open(probe_runbook):
    from prefect import get_client
    from prefect.states import Cancelled, Paused

    from app.intake import _run_is_open

    from flows.launch import start_incident

    run = start_incident(probe_runbook, {"site": "x"}, idempotency_key=uuid.uuid4().hex)
    assert _run_is_open(str(run.id))
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Paused(), force=True)
        assert _run_is_open(str(run.id))  # waiting for people is open
        client.set_flow_run_state(run.id, Cancelled(), force=True)
    assert not _run_is_open(str(run.id))
    assert not _run_is_open(str(uuid.uuid4()))  # deleted or never existed


def test_no_resolution_yet_reads_as_none(probe_runbook):
    """A check with alert_resolved asks before anything was delivered: that is None, not an error."""
    from flows.launch import deliver_resolution, read_resolution, start_incident

    run = start_incident(probe_runbook, {"site": "x"}, idempotency_key=uuid.uuid4().hex)
    assert read_resolution(run.id) is None
    deliver_resolution(run.id, {"status": "resolved", "fingerprint": "f1"})
    deliver_resolution(run.id, {"status": "resolved", "fingerprint": "f2"})  # the first one counts
    assert read_resolution(run.id) == {"status": "resolved", "fingerprint": "f1"}


def test_launcher_says_which_incidents_are_open_by_a_count_or_by_reading_them(fresh_probe):
    """`open_runs` (the drainer's read before each batch): all open is one count; else each run is read, and a
    Completed, Failed or Cancelled run is closed, a Crashed one open (the watcher sets it going), a missing one closed."""
    from prefect import get_client
    from prefect.states import Cancelled, Completed, Crashed, Failed

    from flows.launch import Launcher

    launcher = Launcher()
    try:
        runs = [launcher.start_incident(fresh_probe, {"n": i}, idempotency_key=uuid.uuid4().hex) for i in range(6)]
        ids = [str(run.id) for run in runs]
        requests: list[str] = []
        launcher.client._client.event_hooks["request"].append(lambda request: requests.append(request.url.path))
        assert launcher.open_runs(ids) == set(ids)
        assert [path.rsplit("/api", 1)[1] for path in requests] == ["/flow_runs/count"], "all open: one count"
        with get_client(sync_client=True) as client:
            for run, state in zip(runs, [Completed(), Failed(), Cancelled(), Crashed()]):
                client.set_flow_run_state(run.id, state, force=True)
        gone = str(uuid.uuid4())
        assert launcher.open_runs(ids + [gone]) == {ids[3], ids[4], ids[5]}
    finally:
        launcher.close()


def test_launcher_keeps_the_key_semantics_and_finds_a_deployment_made_again(fresh_probe):
    """The drainer's Launcher: one client, the deployment's id kept; the same key gives the same run,
    and a deployment deleted and made again (a new id, the server answers 404) is looked up again."""
    from prefect import get_client

    from flows.launch import Launcher

    launcher = Launcher()
    try:
        key = uuid.uuid4().hex
        first = launcher.start_incident(fresh_probe, {"site": "x"}, severity="1", idempotency_key=key, incident="probe #1")
        assert launcher.start_incident(fresh_probe, {"site": "y"}, idempotency_key=key).id == first.id
        assert first.parameters["parameters"] == {"site": "x"} and first.parameters["severity"] == "1"
        assert f"runbook:{fresh_probe}" in first.tags and first.state.is_scheduled()
        gone = str(uuid.uuid4())
        assert launcher.open_runs([str(first.id), gone]) == {str(first.id)}
        assert launcher.run_is_open(str(first.id)) and not launcher.run_is_open(gone)

        old_id = launcher.deployment_id(fresh_probe)
        with get_client(sync_client=True) as client:
            client.delete_deployment(old_id)
        make_probe(fresh_probe)
        second = launcher.start_incident(fresh_probe, {"site": "z"}, idempotency_key=uuid.uuid4().hex)
        assert second.deployment_id != old_id and launcher.deployment_id(fresh_probe) == second.deployment_id
    finally:
        launcher.close()


def test_launchers_bulk_create_makes_the_runs_start_incident_makes(fresh_probe):
    """Many incidents at once (the drainer's batch): Prefect's bulk create, 100 runs a request, each run as
    `start_incident` makes it, and a key already used gives its run back, as `start_incident`'s does."""
    from prefect import get_client

    from flows.launch import Launcher

    launcher = Launcher()
    try:
        known = uuid.uuid4().hex
        first = launcher.start_incident(fresh_probe, {"site": "x"}, idempotency_key=known)
        starts = [dict(parameters={"site": f"s{i}"}, severity="1", drill=i == 0, idempotency_key=f"{known}-{i}",
                       alert={"fingerprint": f"f{i}"}, incident=f"probe #{i}") for i in range(149)]
        created = launcher.start_incidents(fresh_probe, starts + [dict(parameters={"site": "y"}, idempotency_key=known)])
        assert len(created) == 150 and created[known] == first.id
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(created[f"{known}-0"])
        single = launcher.start_incident(fresh_probe, idempotency_key=uuid.uuid4().hex, **{
            k: v for k, v in starts[0].items() if k != "idempotency_key"})
        assert run.parameters == single.parameters and sorted(run.tags) == sorted(single.tags) == sorted(
            [f"runbook:{fresh_probe}", "drill"])
        assert run.idempotency_key == f"{known}-0" and run.state.is_scheduled()
        assert launcher.open_runs([str(i) for i in created.values()]) == {str(i) for i in created.values()}
    finally:
        launcher.close()


def test_launcher_fails_fast_when_prefect_goes_away(probe_runbook):
    """Once connected, Prefect's client retries a refused connection for about a minute; the Launcher's raises
    at once (the drainer backs off itself and reports Prefect unreachable)."""
    import time

    import httpx

    from tasks.inputs import prefect_away as is_transient
    from flows.launch import Launcher
    from tests.alerts.procs import free_port

    launcher = Launcher()
    try:
        assert launcher.health() is None  # connected once
        launcher.client._client.base_url = httpx.URL(f"http://127.0.0.1:{free_port()}/api/")  # Prefect is gone
        began = time.monotonic()
        with pytest.raises(Exception) as caught:
            launcher.run_is_open(str(uuid.uuid4()))
        assert is_transient(caught.value) and time.monotonic() - began < 5
    finally:
        launcher.close()


# ---------------------------------------------------------------- PagerDuty and the default route, for real


@pytest.fixture
def fresh_probe() -> str:
    return make_probe()


@pytest.fixture
def sources_client(make_settings, fresh_probe):
    """PagerDuty's datapipe events go to the probe; anything no route takes goes there too, by the default route."""
    from fastapi.testclient import TestClient

    from app.web import create_app

    probe_runbook = fresh_probe
    settings = make_settings(routes=f"""
routes:
  - name: datapipe
    match: [component=postgres, group=prod-datapipe]
    runbook: {probe_runbook}
    parameters: {{site: labels.source}}
fallback: {{enabled: false}}
unrouted:
  runbook: {probe_runbook}
  parameters: {{site: {{value: unrouted}}}}
""")
    with TestClient(create_app(settings)) as client:
        yield client


def test_pagerduty_example_starts_its_runbook(sources_client, fresh_probe):
    probe_runbook = fresh_probe
    from tests.alerts.conftest import fixture_json

    body = fixture_json("pagerduty_trigger.json")
    body["dedup_key"] = f"pd-{uuid.uuid4().hex[:8]}"
    r = sources_client.post("/alerts/pagerduty", json=body)
    assert r.status_code == 202 and r.json()["status"] == "success" and r.json()["dedup_key"] == body["dedup_key"]
    assert r.json()["accepted"][0]["runbook"] == probe_runbook
    drained(sources_client)
    (run,) = runs_of(probe_runbook)
    assert run.parameters["parameters"] == {"site": body["payload"]["source"]}
    assert run.parameters["alert"]["source"] == "pagerduty" and run.parameters["alert"]["group_key"] == body["dedup_key"]

    # PagerDuty's resolve names only the dedup_key; it reaches the same run
    r = sources_client.post("/v2/enqueue", json={"routing_key": "k", "event_action": "resolve", "dedup_key": body["dedup_key"]})
    assert r.status_code == 202
    drained(sources_client)
    from flows.launch import read_resolution

    assert read_resolution(run.id)["status"] == "resolved"
    assert len(runs_of(probe_runbook)) == 1


def test_an_unrouted_alert_starts_the_default_routes_runbook(sources_client, fresh_probe):
    probe_runbook = fresh_probe
    r = sources_client.post("/alerts/generic", json={"status": "firing", "title": "Chiller 3 temperature",
                                                     "labels": {"site": "east"}, "group": f"chiller-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 202
    (unrouted,) = r.json()["unrouted"]
    assert unrouted["runbook"] == probe_runbook and "no route matches" in unrouted["reason"]
    drained(sources_client)
    (run,) = runs_of(probe_runbook)
    assert run.parameters["parameters"] == {"site": "unrouted"}
    assert run.parameters["alert"]["labels"]["alertname"] == "Chiller 3 temperature"
    (line,) = sources_client.app.state.store.unrouted()
    assert line["alert"]["labels"]["site"] == "east"
