"""docs/production.md as data: its marked command blocks and its tables of settings, for the tests to run.

A block is marked by `<!-- test: NAME -->` on the line before its ```sh fence; a part's settings table by
`<!-- settings: PART -->` on the line before the table. Commands are run as written: `prefect`, `runbook` and
`python` are this virtualenv's; a test may only put this machine's values in place of an option's (`--port`).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "production.md"
PROGRAMS = {"prefect": [str(Path(sys.executable).parent / "prefect")],
            "runbook": [str(Path(sys.executable).parent / "runbook")],
            "python": [sys.executable]}


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def block(name: str) -> str:
    """The shell block marked `<!-- test: name -->`."""
    found = re.search(rf"<!-- test: {re.escape(name)} -->\n```sh\n(.*?)\n```", _text(), re.S)
    assert found, f"docs/production.md has no block marked <!-- test: {name} --> (before a ```sh fence)"
    return found.group(1)


def lines(name: str) -> list[str]:
    """The block's commands, one a line, without comments."""
    out = []
    for line in block(name).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def argv(command: str) -> list[str]:
    """A command line as this machine runs it: the program from this virtualenv."""
    words = shlex.split(command, comments=True)
    return PROGRAMS.get(words[0], [words[0]]) + words[1:]


def command(name: str) -> list[str]:
    """The block's only command."""
    found = lines(name)
    assert len(found) == 1, f"block {name} of docs/production.md holds {len(found)} commands, not one: {found}"
    return argv(found[0])


def with_options(words: list[str], **values: str) -> list[str]:
    """The command with this machine's value for each named option (which the document's command must have)."""
    out = list(words)
    for option, value in values.items():
        assert option in out, f"docs/production.md's command {' '.join(words)} has no {option}"
        out[out.index(option) + 1] = value
    return out


def settings(part: str) -> list[str]:
    """The settings the document's table for a part lists (first column, in backquotes)."""
    found = re.search(rf"<!-- settings: {re.escape(part)} -->\n((?:\|.*\n)+)", _text())
    assert found, f"docs/production.md has no table marked <!-- settings: {part} -->"
    names = re.findall(r"^\| `([A-Z_]+)` \|", found.group(1), re.M)
    assert names, f"the settings table of the {part} names no setting"
    return names


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: dict


def curl(name: str) -> Request:
    """A `curl -X METHOD URL -H ... -d JSON` block, read as the request it sends."""
    words = shlex.split(block(name).replace("\\\n", " "), comments=True)
    assert words[0] == "curl", words
    method, url, headers, body = "GET", "", {}, {}
    for i, word in enumerate(words):
        if word == "-X":
            method = words[i + 1]
        elif word == "-H":
            key, _, value = words[i + 1].partition(":")
            headers[key.strip()] = value.strip()
        elif word == "-d":
            body = json.loads(words[i + 1])
        elif word.startswith("http") and not url:
            url = word
    return Request(method, url, headers, body)
