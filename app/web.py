"""The project's one HTTP app: the alert receiver and the channels' answer webhooks.

``POST /alerts/{alertmanager,grafana,generic}`` parse the body, route every alert
and write the routed ones to the spool before answering 202; the spool drainer
starts the incidents in the background (see app/intake.py).
Every refusal is a 4xx with a JSON body saying what to fix; within a good
notification each bad alert is reported on its own and the rest are accepted.
"""

from __future__ import annotations

import json
from dataclasses import asdict
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from integrations.alerts import ItemError, PayloadError, get_source
from integrations.alerts.auth import AuthError, check_grafana_signature, check_token
from app.intake import Drainer, Intake
from integrations.alerts.routing import Routes, RoutesError, load_routes, route
from integrations.alerts.store import Store
from runbooks.settings import Settings, get_settings

log = logging.getLogger("runbook.intake")

MAX_BODY_BYTES = 1024 * 1024  # Alertmanager groups of a few hundred alerts fit easily


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="runbook-intake"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class RouteTable:
    """routes.yaml, re-read when it changes; a broken edit keeps the last good table (and says so in the log)."""

    def __init__(self, path: Path):
        self.path, self._mtime = path, None
        self.routes = load_routes(path)  # broken at start -> fail loudly now
        self._mtime = self._stat()

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def current(self) -> Routes:
        mtime = self._stat()
        if mtime != self._mtime:
            try:
                self.routes = load_routes(self.path)
                log.info("reloaded %s", self.path)
            except RoutesError as exc:
                log.error("%s; still using the previous routes", exc)
            self._mtime = mtime
        return self.routes


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"body of {declared} bytes is over the {limit} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings | None = None, *, intake: Intake | None = None, drain: bool = True,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The receiver app. ``intake`` replaces the Prefect hooks (tests); ``drain=False`` leaves the spool alone."""
    settings = settings or get_settings()
    store = intake.store if intake else Store(settings.state_dir)
    intake = intake or Intake(store)
    drainer = Drainer(intake)
    table = RouteTable(settings.routes_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if drain:
            drainer.start()
            drainer.wake()  # whatever an earlier run left in the spool
        yield
        if drain:
            await run_in_threadpool(drainer.stop)

    app = FastAPI(title="response-runbooks intake", lifespan=lifespan)
    app.state.store, app.state.intake, app.state.drainer, app.state.routes = store, intake, drainer, table

    async def receive(source_name: str, request: Request) -> JSONResponse:
        try:
            body = await read_body(request, max_body_bytes)
        except PayloadError as exc:
            return error(413, str(exc), fix="send fewer alerts per notification (Alertmanager: max_alerts)")
        try:
            if settings.intake_token is not None:
                check_token(request.headers.get("authorization"), settings.intake_token.get_secret_value())
            if source_name == "grafana" and settings.grafana_secret is not None:
                check_grafana_signature(request.headers, body, settings.grafana_secret.get_secret_value())
        except AuthError as exc:
            return error(exc.status, str(exc))
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return error(400, f"body is not JSON: {str(exc) or 'nested too deeply'}", fix="send the alert as a UTF-8 JSON object")
        try:
            parsed = get_source(source_name).parse_each(data)
        except PayloadError as exc:
            return error(422, str(exc), source=source_name)
        rejected = [{"index": p.index, "error": p.error} for p in parsed if isinstance(p, ItemError)]
        alerts = [(i, p) for i, p in enumerate(parsed) if not isinstance(p, ItemError)]
        if not alerts:
            return error(422, "no alert in this notification could be read", rejected=rejected, source=source_name)

        routes = table.current()
        spooled, unrouted = [], []
        for index, alert in alerts:
            decision = route(alert, routes, settings.runbooks_dir)
            alert_json = alert.model_dump(mode="json")
            if decision.routed:
                spooled.append((index, alert, {"alert": alert_json, "decision": asdict(decision)}))
            else:
                unrouted.append({"index": index, "fingerprint": alert.fingerprint, "reason": decision.reason})
                await run_in_threadpool(store.record_unrouted, alert_json, decision.reason)
        ids = await run_in_threadpool(store.append, [entry for _, _, entry in spooled])
        drainer.wake()
        accepted = [{"index": index, "fingerprint": alert.fingerprint, "status": alert.status,
                     "runbook": entry["decision"]["runbook"], "spool_id": sid}
                    for (index, alert, entry), sid in zip(spooled, ids)]
        return JSONResponse({"accepted": accepted, "unrouted": unrouted, "rejected": rejected}, status_code=202)

    @app.post("/alerts/alertmanager", status_code=202)
    async def alertmanager(request: Request):
        """Prometheus Alertmanager webhook_config (payload version 4)."""
        return await receive("alertmanager", request)

    @app.post("/alerts/grafana", status_code=202)
    async def grafana(request: Request):
        """Grafana alerting webhook contact point."""
        return await receive("grafana", request)

    @app.post("/alerts/generic", status_code=202)
    async def generic(request: Request):
        """Our own JSON alert shape (docs/alerting.md)."""
        return await receive("generic", request)

    @app.get("/healthz")
    async def healthz():
        pending = await run_in_threadpool(store.pending_count)
        return {"status": "ok", "spool_pending": pending, "prefect_reachable": drainer.prefect_reachable}

    from app import inbound

    app.include_router(inbound.router)
    return app
