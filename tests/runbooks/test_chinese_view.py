"""The Chinese view is Chinese: `runbook show --language zh`, the Chinese half of the docs and every Chinese text of a runbook.

Ids, conditions and templates are code (in backticks or `{{ }}`), and a few acronyms are how Chinese writes them
(HIS, IP, GDP, MPa); everything else with two or more Latin letters in a row is English prose leaking in.
"""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from integrations.contacts import load_directory
from runbooks.checklist import checklist
from runbooks.docs import runbook_page
from runbooks.loader import load_all
from runbooks.model import Text
from runbooks.settings import get_settings

CODE = re.compile(r"`[^`]*`|\{\{.*?\}\}|\{%.*?%\}|[\w./-]+\.(?:yaml|yml|json|py)\b")
LATIN = re.compile(r"[A-Za-z]{2,}")
ACRONYMS = {"HIS", "IP", "GDP", "MPa", "IT", "id"}


def _runbooks():
    settings = get_settings()
    runbooks, errors = load_all(settings.runbooks_dir, load_directory(settings.contacts_file))
    assert not errors, errors
    return runbooks


RUNBOOKS = _runbooks()


def english(text: str) -> list[str]:
    """Lines of `text` with English words outside code."""
    return [line for line in text.splitlines() if set(LATIN.findall(CODE.sub("", line))) - ACRONYMS]


@pytest.mark.parametrize("rid", sorted(RUNBOOKS))
def test_show_in_chinese_has_no_english_prose(rid):
    assert english(checklist(RUNBOOKS[rid], "zh")) == []


@pytest.mark.parametrize("rid", sorted(RUNBOOKS))
def test_the_docs_open_with_the_chinese_checklist(rid):
    page = runbook_page(RUNBOOKS[rid])
    chinese = page.split("\n---\n", 1)[0].split("\n", 1)[1]          # after the generated-file banner
    assert english(chinese) == []
    assert checklist(RUNBOOKS[rid], "en").strip() in page              # the English one follows


def _texts(value, where=""):
    if isinstance(value, Text):
        yield where, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _texts(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _texts(item, f"{where}[{i}]")


@pytest.mark.parametrize("rid", sorted(RUNBOOKS))
def test_every_chinese_text_and_default_is_chinese(rid):
    """Titles, messages, labels, notes: what pages and forms show in Chinese. Defaults flow into messages too."""
    rb = RUNBOOKS[rid]
    leaks = [f"{where}: {text.zh[:80]}" for where, text in _texts(rb) if english(text.zh)]
    leaks += [f"parameters.{name}.default: {p.default}" for name, p in rb.parameters.items()
              if isinstance(p.default, str) and re.search(r"[\u4e00-\u9fff]", p.default) and english(p.default)]
    assert leaks == []


def test_roles_durations_and_choices_read_as_people_say_them():
    zh = checklist(RUNBOOKS["hospital-his-outage"], "zh")
    assert "无人回答 10 分钟 后：通知 信息科主任" in zh                    # was "no answer after 0:10:00: page information-dept-head"
    assert "information-dept-head" not in zh.replace("`information-dept-head`", "")
    assert "*选择* (访问数据库速度迟缓 / " in zh                           # a choice field shows its labels
    assert "30 分钟 后" in zh and "6 小时 后" in zh


def test_assumptions_beyond_the_source_are_marked_in_both_languages():
    marks = {rid: checklist(rb, "zh").count("⚠ 超出原文") for rid, rb in RUNBOOKS.items()}
    for rid in ("school-food-safety", "pump-station-power-loss", "police-it-outage", "grid-earthquake", "hospital-his-outage",
                "audit-network-incident", "payment-system-outage"):
        assert marks[rid] >= 1, rid
        assert checklist(RUNBOOKS[rid], "en").count("⚠ beyond the source") == marks[rid]
    police = checklist(RUNBOOKS["police-it-outage"], "zh")
    assert "站点设定" in police and "1 小时 后过期" in police
