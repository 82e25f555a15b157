"""Generated malformed bodies: every one gets a 4xx with a JSON error, never a 5xx, and a good
alert sent right after each still gets through and starts its incident exactly once."""

from __future__ import annotations

import copy
import json
import random

import pytest

from integrations.alerts.auth import grafana_signature
from tests.alerts.conftest import drained, fixture_json

TOKEN = "fuzz-token"
SECRET = "fuzz-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"alertmanager": "alertmanager_mixed.json", "grafana": "grafana_firing.json", "generic": "generic_batch.json"}
WRONG_TYPES = [None, True, 0, -1.5, "", "text", [], [1, 2], {}, {"a": {"b": []}}]


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
            add(f"alert.{field}={value!r}", {**good, "alerts": [{**first, field: value}]})
    for field in ("status", "labels") if source != "generic" else ("status",):
        add(f"alert without {field}", {**good, "alerts": [{k: v for k, v in first.items() if k != field}]})
    add("alert is a list", {**good, "alerts": [[first]]})
    add("label value is an object", {**good, "alerts": [{**first, "labels": {"alertname": {"x": 1}}}]})
    add("times", {**good, "alerts": [{**first, ("starts_at" if source == "generic" else "startsAt"): "01/05/2024 08:00"}]})
    if source == "alertmanager":
        add("version 3", {**good, "version": "3"})
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


def mutate(node, rng: random.Random, depth: int = 0):
    if isinstance(node, dict) and node:
        for key in rng.sample(sorted(node), k=min(len(node), rng.randint(1, 3))):
            roll = rng.random()
            if roll < 0.3:
                del node[key]
            elif roll < 0.6:
                node[key] = rng.choice(WRONG_TYPES)
            else:
                node[key] = mutate(node[key], rng, depth + 1)
        if rng.random() < 0.2:
            node[f"extra{rng.randint(0, 9)}"] = rng.choice(WRONG_TYPES)
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        node[i] = mutate(node[i], rng, depth + 1) if rng.random() < 0.7 else rng.choice(WRONG_TYPES)
    elif isinstance(node, str) and rng.random() < 0.5:
        return rng.choice(["", node * 3, "\u0000", "0001-01-01T00:00:00Z", "2024-13-45T99:99:99Z", "\ud7ff" * 3])
    return node
