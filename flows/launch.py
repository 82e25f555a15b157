"""Starting incidents on the served deployments, and telling them their alert resolved."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from tasks.inputs import deliver_resolution, read_resolution  # noqa: F401  (the intake hands resolutions over here)

DEPLOYMENT = "runbook"


def deployment_name(runbook_id: str) -> str:
    return f"{runbook_id}/{DEPLOYMENT}"


def python_name(runbook_id: str) -> str:
    """The module-level name a runbook's flow is bound to in flows/catalog.py (its deployment entrypoint)."""
    return runbook_id.replace("-", "_")


def start_incident(runbook_id: str, parameters: dict[str, Any] | None = None, *, severity: str | None = None,
                   drill: bool = False, idempotency_key: str | None = None, alert: dict | None = None,
                   incident: str | None = None, time_scale: float = 1.0, auto: bool = False,
                   answers: dict | None = None) -> FlowRun:
    """Create a run of the runbook's deployment and return at once; the same idempotency key gives the same run."""
    return run_deployment(
        deployment_name(runbook_id),
        parameters={"parameters": parameters or {}, "severity": severity, "drill": drill, "alert": alert,
                    "incident": incident, "time_scale": time_scale, "auto": auto, "answers": answers},
        idempotency_key=idempotency_key,
        tags=[f"runbook:{runbook_id}"] + (["drill"] if drill else []),
        timeout=0,
    )
