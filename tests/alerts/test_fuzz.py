"""Generated malformed bodies: every one gets a 4xx with a JSON error, never a 5xx, and a good
alert sent right after each still gets through and starts its incident exactly once. A bad alert
beside good ones costs only itself (issue 15: one lone surrogate used to block a whole group for ever)."""

from __future__ import annotations

import copy
import json
import random

import pytest

from integrations.alerts.auth import grafana_signature
from tests.alerts.conftest import drained, fixture_json
from tests.alerts.fuzzing import KINDS, WRONG_TYPES, fuzz_request, mutate

TOKEN = "fuzz-token"
SECRET = "fuzz-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"alertmanager": "alertmanager_mixed.json", "grafana": "grafana_firing.json", "generic": "generic_batch.json"}


def malformed_bodies(source: str) -> list[tuple[str, bytes, dict]]:
    """(what, body, extra headers) for one source."""
    good = fixture_json(GOOD[source])
    cases: list[tuple[str, bytes, dict]] = []

    def add(what, value, headers=None):
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        cases.append((what, raw, headers or {}))

    # not JSON at all
    for raw in [b"", b"{", b"{'single': 'quotes'}", b"[1,]", b"\xff\xfe\x00garbage", b"null null", b"NaN-ish",
                b"[" * 100_000 + b"]" * 100_000]:
        add(f"bad json {raw[:12]!r}", raw)
    # wrong top-level types
    for value in WRONG_TYPES:
        if not isinstance(value, dict):
            add(f"top-level {value!r}", value)
    # missing or mistyped alerts list
    add("no alerts", {k: v for k, v in good.items() if k != "alerts"} if source != "generic" else {"alerts": None})
    for value in WRONG_TYPES:
        if not isinstance(value, list) or value == []:
            add(f"alerts={value!r}", {**good, "alerts": value})
    # every alert broken, each field in each wrong way
    first = good["alerts"][0]
    for field in sorted(first):
        for value in wrong_values(field):
            envelope = {k: v for k, v in good.items() if k != "status"} if field == "status" else good
            add(f"alert.{field}={value!r}", {**envelope, "alerts": [{**first, field: value}]})
    for field in ("status", "labels") if source != "generic" else ("status",):
        envelope = {k: v for k, v in good.items() if k != "status"}  # an alert without status takes the notification's
        add(f"alert without {field}", {**envelope, "alerts": [{k: v for k, v in first.items() if k != field}]})
    add("alert is a list", {**good, "alerts": [[first]]})
    add("label value is an object", {**good, "alerts": [{**first, "labels": {"alertname": {"x": 1}}}]})
    add("times", {**good, "alerts": [{**first, ("starts_at" if source == "generic" else "startsAt"): "01/05/2024 08:00"}]})
    if source == "alertmanager":
        add("version 2", {**good, "version": "2"})
        add("groupKey number", {**good, "groupKey": 666})
    if source == "grafana":
        add("orgId text", {**good, "orgId": "one"})
    # too big
    add("huge", {**good, "padding": "x" * (1024 * 1024 + 10)})
    return cases


def wrong_values(field: str) -> list:
    """Values no alert may carry in that field (None and '' mean 'absent' for optional fields)."""
    not_text = [True, 0, -1.5, [], [1, 2], {"a": {"b": []}}]
    if field == "status":
        return [None, True, 0, "", "pending", [], {}]
    if field in ("labels", "annotations", "values"):
        return [True, 0, -1.5, "text", [1, 2], {"a": {"b": []}}]
    if field in ("startsAt", "endsAt", "starts_at", "ends_at"):
        return [True, 0, "text", "2024-05-01 08:00", [], {}]
    if field == "severity":
        return ["purple", 0, []]
    return not_text


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic"])
def test_malformed_bodies_get_4xx_and_good_alerts_still_pass(make_client, make_settings, prefect_fake, source):
    client = make_client(make_settings(intake_token=TOKEN, grafana_secret=SECRET))
    cases = malformed_bodies(source)
    assert len(cases) > 40
    good_sent = 0
    for n, (what, raw, extra) in enumerate(cases):
        r = client.post(f"/alerts/{source}", content=raw, headers={**AUTH, **sign(source, raw), **extra,
                                                                    "Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
        assert "error" in r.json(), what
        good_sent += send_good(client, source, n)
    drained(client)
    assert len(prefect_fake.runs) == good_sent  # one incident per good group, none for the bad


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic"])
def test_auth_failures_are_401_even_for_garbage(make_client, make_settings, source):
    client = make_client(make_settings(intake_token=TOKEN, grafana_secret=SECRET))
    good = json.dumps(fixture_json(GOOD[source])).encode()
    for raw in [b"{", good]:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                        {"Authorization": "\u00e9\u00e9".encode("latin-1")}]:
            r = client.post(f"/alerts/{source}", content=raw, headers={**sign(source, raw), **headers})
            assert r.status_code == 401, (raw[:10], headers)
    if source == "grafana":
        r = client.post("/alerts/grafana", content=good, headers={**AUTH, "X-Grafana-Alerting-Signature": "0" * 64})
        assert r.status_code == 401


@pytest.mark.parametrize("seed", range(5))
def test_random_mutations_never_5xx(make_client, seed):
    """Random deletions, type swaps and insertions anywhere in real payloads."""
    rng = random.Random(seed)
    client = make_client()
    for _ in range(60):
        source = rng.choice(list(GOOD))
        body = mutate(copy.deepcopy(fixture_json(GOOD[source])), rng)
        r = client.post(f"/alerts/{source}", content=json.dumps(body))
        assert r.status_code in (202, 400, 413, 422), r.text
        if r.status_code == 202:
            answer = r.json()
            assert answer["accepted"] or answer["unrouted"]


def test_bad_alerts_in_a_batch_do_not_lose_good_ones(make_client, prefect_fake):
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    good_first = body["alerts"][0]
    body["alerts"] = [{"status": 7}, good_first, "junk", {**good_first, "startsAt": "never"}, {"labels": None}]
    r = client.post("/alerts/alertmanager", json=body)
    assert r.status_code == 202
    assert [a["index"] for a in r.json()["accepted"]] == [1]
    assert [e["index"] for e in r.json()["rejected"]] == [0, 2, 3, 4]
    drained(client)
    assert len(prefect_fake.runs) == 1


def sign(source: str, raw: bytes) -> dict:
    return {"X-Grafana-Alerting-Signature": grafana_signature(SECRET, raw)} if source == "grafana" else {}


def send_good(client, source: str, n: int) -> int:
    """A good notification of a fresh group; 1 incident expected from it."""
    body = fixture_json(GOOD[source])
    if source == "generic":
        body = {"status": "firing", "title": f"good {n}", "labels": {"runbook": "power-failure"}, "group": f"g{n}"}
    else:
        body["groupKey"] = f"good-{n}"
    raw = json.dumps(body).encode()
    r = client.post(f"/alerts/{source}", content=raw, headers={**AUTH, **sign(source, raw)})
    assert r.status_code == 202, r.text
    return 1


# ---------------------------------------------------------------- issue 15


def test_a_lone_surrogate_beside_a_good_alert_costs_only_itself(make_client, prefect_fake):
    """The notification that used to get 500 every time: one good routed alert, one with "\\ud800" in a label."""
    client = make_client()
    body = fixture_json("alertmanager_mixed.json")
    good = body["alerts"][0]
    bad = {**copy.deepcopy(good), "fingerprint": "badbadbadbad0001"}
    bad["labels"]["instance"] = "his-db-\ud800"
    body["alerts"] = [good, bad]
    raw = json.dumps(body).encode()  # the surrogate travels as the JSON escape \ud800
    assert b"\\ud800" in raw
    for _ in range(2):  # every time, not only the first
        r = client.post("/alerts/alertmanager", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        answer = r.json()
        assert [a["index"] for a in answer["accepted"]] == [0] and answer["accepted"][0]["runbook"] == "hospital-his-outage"
        (rejected,) = answer["rejected"]
        assert rejected["index"] == 1 and "labels.instance" in rejected["error"] and "surrogate" in rejected["error"]
    drained(client)
    (run,) = prefect_fake.runs
    assert run["runbook"] == "hospital-his-outage" and run["alert"]["fingerprint"] == good["fingerprint"]


def test_a_surrogate_in_an_unrouted_alert_is_rejected_not_a_500(make_client):
    client = make_client()
    r = client.post("/alerts/generic", content=json.dumps({"status": "firing", "title": "Chiller \udfff"}).encode())
    assert r.status_code == 422 and "surrogate" in r.json()["rejected"][0]["error"]
    assert client.app.state.store.unrouted() == []


def body_of(source: str) -> dict:
    return fixture_json({**GOOD, "pagerduty": "pagerduty_trigger.json"}[source])


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic", "pagerduty"])
@pytest.mark.parametrize("what,make,status,words", [
    ("integer of 4,301 digits", lambda raw: raw.replace(b'"__x__"', b"7" * 4301), 400, "number"),
    ("integer of 65 digits", lambda raw: raw.replace(b'"__x__"', b"7" * 65), 400, "number"),
    ("float too large", lambda raw: raw.replace(b'"__x__"', b"1e400"), 400, "too large"),
    ("NaN", lambda raw: raw.replace(b'"__x__"', b"NaN"), 400, "NaN"),
    ("invalid UTF-8 in a string", lambda raw: raw.replace(b'"__x__"', b'"caf\xe9"'), 400, "UTF-8"),
    ("an encoded surrogate (CESU-8)", lambda raw: raw.replace(b'"__x__"', b'"\xed\xa0\x80"'), 400, "UTF-8"),
    ("UTF-16", lambda raw: raw.replace(b'"__x__"', b"1").decode().encode("utf-16"), 400, "UTF-8"),
    ("33 levels deep", lambda raw: raw.replace(b'"__x__"', b"[" * 32 + b"]" * 32), 400, "nested"),
    ("200,000 levels deep", lambda raw: raw.replace(b'"__x__"', b"[" * 200_000 + b"]" * 200_000), 400, "nested"),
    ("a string of 65,537 characters", lambda raw: raw.replace(b'"__x__"', b'"' + b"x" * 65_537 + b'"'), 400, "string"),
    ("a key of 65,537 characters", lambda raw: raw.replace(b'"__x__"', b'{"' + b"k" * 65_537 + b'": 1}'), 400, "key"),
])
def test_body_limits(make_client, source, what, make, status, words):
    client = make_client()
    raw = make(json.dumps({**body_of(source), "padding": "__x__"}).encode())
    r = client.post(f"/alerts/{source}", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, (what, r.text[:300])
    assert words in r.json()["error"], r.json()["error"]


def test_within_limits_is_accepted(make_client):
    client = make_client()
    body = {**body_of("alertmanager"), "padding": [[["x" * 65_536, 10 ** 63, -1.5e308]]]}
    assert client.post("/alerts/alertmanager", json=body).status_code == 202


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic", "pagerduty"])
def test_the_token_is_checked_before_the_size(make_client, make_settings, source):
    """An unauthenticated sender learns nothing about the body limit: 401, not 413."""
    client = make_client(make_settings(intake_token=TOKEN), max_body_bytes=4000)
    big = json.dumps({**body_of(source), "padding": "x" * 5000}).encode()
    assert client.post(f"/alerts/{source}", content=big).status_code == 401

    def stream():  # no Content-Length either
        yield big

    assert client.post(f"/alerts/{source}", content=stream()).status_code == 401
    assert client.post(f"/alerts/{source}", content=big, headers=AUTH).status_code == 413


# ---------------------------------------------------------------- seeded fuzzing of every kind


def test_fuzzing_is_repeatable():
    first = [fuzz_request(random.Random(11)).body for _ in range(3)]
    again = [fuzz_request(random.Random(11)).body for _ in range(3)]
    assert first == again
    rng = random.Random(3)
    assert {fuzz_request(rng).kind for _ in range(300)} == set(KINDS)


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_requests_never_5xx(make_client, prefect_fake, seed):
    """Surrogates, huge numbers, invalid UTF-8, deep nesting, long strings, truncation, random bytes and
    notifications mixing good and bad alerts: 4xx or 202, never 5xx; in a mixed one the good alert is taken."""
    rng = random.Random(seed)
    client = make_client()
    for n in range(150):
        req = fuzz_request(rng)
        r = client.post(req.path, content=req.body, headers={"Content-Type": "application/json"})
        assert r.status_code in (202, 400, 413, 422), f"#{n} {req.kind} {req.source}: {r.status_code} {r.text[:300]}"
        answer = r.json()
        if r.status_code != 202:
            assert answer["error"], f"#{n} {req.kind}"
        if req.good_index is not None:
            assert r.status_code == 202, f"#{n} mixed: {r.text[:300]}"
            taken = [a["index"] for a in answer["accepted"] + answer["unrouted"]]
            assert req.good_index in taken and len(answer["rejected"]) >= 1, f"#{n} mixed: {answer}"
    send_good(client, "alertmanager", 100_000 + seed)
    drained(client)
    assert any(run["alert"]["group_key"] == f"good-{100_000 + seed}" for run in prefect_fake.runs)
