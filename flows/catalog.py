"""Every runbook as a module-level Prefect flow.

A deployment re-imports its entrypoint by name, so each generated flow must be
bound to a name in this module (`hospital-his-outage` -> `hospital_his_outage`)
and defined here, where `flows/catalog.py:hospital_his_outage` finds it. A
runbook that does not load is left out; `runbook lint` says why.
"""

from __future__ import annotations

from datetime import datetime

from prefect import Flow, flow

from flows.engine import flow_options, run_incident
from flows.launch import python_name
from integrations.contacts import load_directory
from runbooks.loader import load_all
from runbooks.model import Runbook
from runbooks.settings import get_settings


def make_flow(runbook: Runbook) -> Flow:
    def run(parameters: dict | None = None, severity: str | None = None, drill: bool = False, time_scale: float = 1.0,
            auto: bool = False, answers: dict | None = None, incident: str | None = None, alert: dict | None = None,
            clock: datetime | None = None):
        return run_incident(runbook, parameters=parameters, severity=severity, drill=drill, time_scale=time_scale,
                            auto=auto, answers=answers, incident=incident, alert=alert, clock=clock)

    run.__name__ = run.__qualname__ = python_name(runbook.id)
    run.__module__ = __name__
    run.__doc__ = f"{runbook.title.zh} / {runbook.title.en}"
    return flow(run, **flow_options(runbook))


def _load() -> dict[str, Runbook]:
    settings = get_settings()
    runbooks, _errors = load_all(settings.runbooks_dir, load_directory(settings.contacts_file))
    return runbooks


RUNBOOKS: dict[str, Runbook] = _load()
FLOWS: dict[str, Flow] = {}
for _runbook in RUNBOOKS.values():
    FLOWS[_runbook.id] = globals()[python_name(_runbook.id)] = make_flow(_runbook)
