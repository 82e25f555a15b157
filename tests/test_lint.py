"""`runbook lint`: the shipped runbooks pass; each broken fixture fails naming file, step and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from integrations.contacts import load_directory
from runbooks.loader import RunbookError, load_file

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "fixtures" / "broken"
DIRECTORY = load_directory(ROOT / "config" / "contacts.yaml")

# fixture -> (step named in the error, words of the message, words of the fix)
EXPECTED = {
    "duplicate-id": ("check", "the id is used twice", "give each step its own id"),
    "dangling-reference": ("notify-lead", "refers to step 'triage', which does not exist", "use the id of an earlier step"),
    "track-cycle": ("tracks", "tracks wait for each other in a cycle: a -> b -> a", "remove one of those `after` entries"),
    "unknown-role": ("tell-mayor", "role 'mayor' is not declared under roles", "add 'mayor' to roles or use one of: chief-operator"),
    "bad-template": ("tell-chief", "template does not compile", "fix the Jinja syntax"),
    "bad-time-rule": ("report-due", "met_by 'write-report' is not a step", "name the step whose completion meets the deadline"),
    "no-contact": ("wake-watchman", "role 'night-watchman' has no person in the contacts directory", "add `night-watchman` to the roles of someone"),
    "unknown-kind": ("teleport", "has an unknown kind", "use one of the step kinds"),
    "bad-duration": ("pause", "'soon' is not a duration", "write it like 45s, 30m"),
    "endless-repeat": ("readings", "a repeat without `until` runs up to max_count times", "add `until: <condition>`"),
    "bad-start": ("fallback", "the start condition refers to step 'trige', which does not exist", "known ids: triage"),
    "iteration-id": ("stage-report--2", "'--' in a step id is kept for the iterations of a repeat", "use single dashes, e.g. 'stage-report-2'"),
}


def test_every_broken_fixture_is_covered():
    assert {p.stem for p in BROKEN.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_runbook_names_file_step_and_fix(name):
    step, message, fix = EXPECTED[name]
    with pytest.raises(RunbookError) as caught:
        load_file(BROKEN / f"{name}.yaml", DIRECTORY)
    error = caught.value.errors[0]
    assert error.file.endswith(f"{name}.yaml")
    assert error.step == step
    assert message in error.message
    assert fix in error.fix
    text = str(error)
    assert f"{name}.yaml, step '{step}'" in text and "fix:" in text


def test_lint_command_passes_on_shipped_runbooks():
    result = subprocess.run([sys.executable, "-m", "cli.main", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_lint_command_fails_on_broken_fixtures_with_file_step_and_fix():
    result = subprocess.run([sys.executable, "-m", "cli.main", "lint", str(BROKEN)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"0 ok, {len(EXPECTED)} failed" in result.stdout
    assert "FAIL" in result.stdout and "step 'tell-mayor'" in result.stdout and "fix: add 'mayor' to roles" in result.stdout


def test_prefect_yaml_matches_the_runbooks():
    """prefect.yaml is generated from the runbooks; a runbook added without regenerating it fails here."""
    result = subprocess.run([sys.executable, "-m", "flows.deploy", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runbook_documents_match_the_runbooks():
    result = subprocess.run([sys.executable, "-m", "cli.main", "docs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
