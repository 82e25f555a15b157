"""Starting incidents on the served deployments, and telling them their alert resolved."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

DEPLOYMENT = "runbook"
RESOLUTION_KEY = "alert-resolved"


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
    from prefect.deployments import run_deployment

    return run_deployment(
        deployment_name(runbook_id),
        parameters={"parameters": parameters or {}, "severity": severity, "drill": drill, "alert": alert,
                    "incident": incident, "time_scale": time_scale, "auto": auto, "answers": answers},
        idempotency_key=idempotency_key,
        tags=[f"runbook:{runbook_id}"] + (["drill"] if drill else []),
        timeout=0,
    )


def deliver_resolution(flow_run_id: UUID | str, alert: dict[str, Any]) -> None:
    """Hand a resolved alert to its incident (a check step with alert_resolved waits for this)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.create_flow_run_input(flow_run_id=UUID(str(flow_run_id)), key=RESOLUTION_KEY,
                                         value=json.dumps(alert, default=str))
        except Exception as exc:
            if "already exists" in str(exc).lower() or "409" in str(exc):
                return  # the first resolution is the one that counts
            raise


def read_resolution(flow_run_id: UUID | str) -> dict | None:
    """The resolution delivered to the run, or None while there is none."""
    from prefect.client.orchestration import get_client

    from tasks.people import read_input

    with get_client(sync_client=True) as client:
        raw = read_input(client, UUID(str(flow_run_id)), RESOLUTION_KEY)
    return json.loads(raw) if raw else None
