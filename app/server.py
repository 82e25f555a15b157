"""Run the receiver: ``runbook intake`` and ``runbook up --intake-port`` call ``run_intake``."""

from __future__ import annotations

import uvicorn

from app.web import create_app
from runbooks.settings import get_settings


def run_intake(host: str | None = None, port: int | None = None, *, log_level: str = "info") -> None:
    """Serve app.web on host:port (default: settings.intake_host / intake_port) until interrupted.

    One worker process only: the spool drainer runs inside it, and one drainer keeps alerts in order."""
    settings = get_settings()
    uvicorn.run(create_app(settings), host=host or settings.intake_host, port=port or settings.intake_port,
                log_level=log_level, workers=1)
