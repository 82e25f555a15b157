"""Seeded mutations of real alert payloads, shared by tests/alerts/test_fuzz.py and bench/fuzz.py.

``fuzz_request(rng)`` returns one request built from a real Alertmanager, Grafana (unified and
legacy), PagerDuty Events v2 (PagerDuty's own example, Zabbix's media type) or generic payload,
broken in one of the ways a sender (or a proxy between) has been seen to break them. The same
seed gives the same requests.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "alerts"
PAYLOADS = {
    "alertmanager": ["alertmanager_mixed.json", "alertmanager_resolved.json"],
    "grafana": ["grafana_firing.json", "grafana_legacy.json"],
    "generic": ["generic_batch.json"],
    "pagerduty": ["pagerduty_trigger.json", "pagerduty_zabbix.json"],
}
WRONG_TYPES = [None, True, 0, -1.5, "", "text", [], [1, 2], {}, {"a": {"b": []}}]
SURROGATES = ["\ud800", "\udfff", "a\udbffb", "\ud83d"]  # lone halves: valid JSON escapes, not characters
HUGE = "__huge_number__"
KINDS = ("structure", "surrogate", "huge-number", "invalid-utf8", "deep", "long-string", "mixed", "truncated", "bytes")


def payload(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class FuzzRequest:
    kind: str
    source: str
    body: bytes
    good_index: int | None = None   # "mixed": this alert is good and must be accepted

    @property
    def path(self) -> str:
        return f"/alerts/{self.source}"


def fuzz_request(rng: random.Random, kinds: tuple[str, ...] = KINDS) -> FuzzRequest:
    kind = rng.choice(kinds)
    source = rng.choice(sorted(PAYLOADS))
    if kind == "mixed" and source == "pagerduty":  # one event per request: nothing to mix
        source = rng.choice(["alertmanager", "grafana", "generic"])
    body = payload(rng.choice([p for p in PAYLOADS[source] if kind != "mixed" or "legacy" not in p]))
    if kind == "structure":
        return FuzzRequest(kind, source, dumps(mutate(body, rng)))
    if kind == "surrogate":
        put_somewhere(body, rng, lambda old: insert(old if isinstance(old, str) else "", rng.choice(SURROGATES), rng))
        labels = next((a["labels"] for a in body.get("alerts", []) if isinstance(a, dict) and a.get("labels")), None)
        if labels and rng.random() < 0.3:  # a label name, not a value
            labels[insert("name", rng.choice(SURROGATES), rng)] = "value"
        return FuzzRequest(kind, source, dumps(body))
    if kind == "huge-number":
        put_somewhere(body, rng, lambda old: HUGE)
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(4301, 20000)))
        return FuzzRequest(kind, source, dumps(body).replace(f'"{HUGE}"'.encode(),
                                                                      (rng.choice(["1", "-", "0."]) + digits).encode(), 1))
    if kind == "invalid-utf8":
        raw = dumps(body)
        at = rng.randrange(len(raw))
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"])
        return FuzzRequest(kind, source, raw[:at] + bad + raw[at:])
    if kind == "deep":
        depth = rng.choice([33, 64, 500, 5000, 200_000])
        put_somewhere(body, rng, lambda old: "__deep__")
        return FuzzRequest(kind, source, dumps(body).replace(b'"__deep__"', b"[" * depth + b"1" + b"]" * depth, 1))
    if kind == "long-string":
        put_somewhere(body, rng, lambda old: "x" * rng.randint(65 * 1024, 300 * 1024))
        return FuzzRequest(kind, source, dumps(body))
    if kind == "mixed":
        return mixed(body, source, rng)
    if kind == "truncated":
        raw = dumps(body)
        return FuzzRequest(kind, source, raw[:rng.randrange(len(raw))])
    return FuzzRequest(kind, source, rng.randbytes(rng.randint(0, 2000)))


def mixed(body: dict, source: str, rng: random.Random) -> FuzzRequest:
    """A notification with one good alert among bad ones (a surrogate, wrong types, not an object)."""
    alerts = body["alerts"]
    good = copy.deepcopy(alerts[0])
    good["status"] = "firing"
    bad = []
    for _ in range(rng.randint(1, 4)):
        alert = copy.deepcopy(rng.choice(alerts))
        roll = rng.random()
        if roll < 0.5:
            labels = alert.setdefault("labels", {})
            labels[rng.choice(sorted(labels) or ["alertname"])] = insert("x", rng.choice(SURROGATES), rng)
        elif roll < 0.8:
            alert = mutate(alert, rng)
            alert["status"] = 7  # whatever else happened, this one cannot be read
        else:
            alert = rng.choice(["junk", 7, None, [alert]])
        bad.append(alert)
    index = rng.randrange(len(bad) + 1)
    body["alerts"] = bad[:index] + [good] + bad[index:]
    return FuzzRequest("mixed", source, dumps(body), good_index=index)


def dumps(value) -> bytes:
    """JSON bytes as a sender writes them; lone surrogates travel as \\u escapes, as in the wild."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def insert(text: str, piece: str, rng: random.Random) -> str:
    at = rng.randint(0, len(text))
    return text[:at] + piece + text[at:]


def put_somewhere(node, rng: random.Random, make) -> None:
    """Replace one value somewhere in the tree (preferring to go deep) with make(old value)."""
    if isinstance(node, dict) and node:
        key = rng.choice(sorted(node))
        child = node[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.75:
            put_somewhere(child, rng, make)
        else:
            node[key] = make(child)
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        if isinstance(node[i], (dict, list)) and node[i] and rng.random() < 0.75:
            put_somewhere(node[i], rng, make)
        else:
            node[i] = make(node[i])


def mutate(node, rng: random.Random, depth: int = 0):
    """Random deletions, type swaps and insertions anywhere in a payload."""
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
