"""The project's one HTTP app: the alert receiver and the channels' answer webhooks.

``POST /alerts/{alertmanager,grafana,generic,pagerduty}`` (and ``/v2/enqueue``, where
PagerDuty senders post) check the sender, read the body within limits, parse, route
every alert and write the routed ones to the spool before answering 202; the spool
drainer starts the incidents in the background (see app/intake.py).

What a sender writes never makes a 5xx: the sender is checked before anything about
the body, a body that can never be read is a 4xx saying why, and within a notification
every alert is parsed, routed and serialised on its own, so a bad alert is listed under
``rejected`` while the good ones beside it are spooled. Only a store that cannot write
(disk full, database locked past its bound) answers 503, and the sender retries.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app import inbound
from app.intake import Drainer, Intake
from integrations.alerts import AlertSource, ItemError, ItemIgnored, PayloadError, get_source
from integrations.alerts.auth import AuthError, check_grafana_signature, check_routing_key, check_token
from integrations.alerts.body import LIMITS, BodyError, Limits, decode
from integrations.alerts.routing import Routes, RoutesError, load_routes, route
from integrations.alerts.store import Store, spool_text
from runbooks.settings import Settings, get_settings

log = logging.getLogger("runbook.intake")

MAX_BODY_BYTES = LIMITS.body_bytes
STORE_BUSY_SECONDS = 10  # a spool write waits this long for a locked database, then the sender hears 503 and retries
RETRY_AFTER_SECONDS = "30"


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: an answer may quote text a sender wrote, lone surrogates included."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error(status: int, message: str, as_source: AlertSource | None = None, **extra: Any) -> JSONResponse:
    """A refusal of the whole request, worded as ``as_source``'s senders expect."""
    headers = {"WWW-Authenticate": 'Bearer realm="runbook-intake"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
    if as_source is not None:
        return SafeJSONResponse(as_source.refusal(status, message, **extra), status_code=as_source.refusal_status(status),
                                headers=headers)
    return SafeJSONResponse({"error": message, **extra}, status_code=status, headers=headers)


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
            except (RoutesError, OSError) as exc:
                log.error("%s; still using the previous routes", exc)
            self._mtime = mtime
        return self.routes


async def read_body(request: Request, limit: int) -> bytes:
    """The body, never more than ``limit`` bytes of it in memory."""
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
               max_body_bytes: int = MAX_BODY_BYTES, limits: Limits | None = None) -> FastAPI:
    """The receiver app. ``intake`` replaces the Prefect hooks (tests); ``drain=False`` leaves the spool alone."""
    settings = settings or get_settings()
    limits = limits or Limits(**{**asdict(LIMITS), "body_bytes": max_body_bytes})
    store = intake.store if intake else Store(settings.state_dir)
    intake = intake or Intake(store)
    web_store = Store(store.dir, busy_timeout=STORE_BUSY_SECONDS)  # the request path waits less than the drainer
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

    async def authenticated_body(source: AlertSource, request: Request) -> bytes | JSONResponse:
        """Who is sending first, then the body (bounded): nobody unauthenticated learns the size limit."""
        token = settings.intake_token.get_secret_value() if settings.intake_token is not None else None
        authorization = request.headers.get("authorization")
        by_routing_key = token is not None and not authorization and source.name == "pagerduty"
        try:
            if token is not None and not by_routing_key:
                check_token(authorization, token)
        except AuthError as exc:
            return error(exc.status, str(exc), source)
        try:
            body = await read_body(request, limits.body_bytes)
        except PayloadError as exc:
            if by_routing_key:
                return error(401, "this intake requires a token: send 'Authorization: Bearer <RUNBOOK_INTAKE_TOKEN>' "
                                  "or the token as the event's routing_key", source)
            return error(413, str(exc), source, fix="send fewer alerts per notification (Alertmanager: max_alerts)")
        except ClientDisconnect:
            return error(400, "the sender closed the connection before the body was complete", source)
        try:
            if by_routing_key:
                try:
                    event = decode(body, limits)
                except BodyError:
                    event = None
                check_routing_key(event, token)
            if source.name == "grafana" and settings.grafana_secret is not None:
                check_grafana_signature(request.headers, body, settings.grafana_secret.get_secret_value())
        except AuthError as exc:
            return error(exc.status, str(exc), source)
        return body

    async def receive(source_name: str, request: Request) -> JSONResponse:
        source = get_source(source_name)
        body = await authenticated_body(source, request)
        if isinstance(body, JSONResponse):
            return body
        try:
            data = decode(body, limits)
        except BodyError as exc:
            return error(exc.status, str(exc), source, fix=exc.fix)
        try:
            parsed = source.parse_each(data)
        except PayloadError as exc:
            return error(422, str(exc), source, source=source_name)
        ignored = [{"index": p.index, "reason": p.error} for p in parsed if isinstance(p, ItemIgnored)]
        rejected = [{"index": p.index, "error": p.error} for p in parsed
                    if isinstance(p, ItemError) and not isinstance(p, ItemIgnored)]
        alerts = [(i, p) for i, p in enumerate(parsed) if not isinstance(p, ItemError)]
        if not alerts and not ignored:
            log_rejected(source_name, rejected)
            return error(422, "no alert in this notification could be read", source, rejected=rejected, source=source_name)

        routes = table.current()
        spooled: list[tuple[int, Any, Any, str]] = []   # index, alert, decision, spool text
        only_logged: list[tuple[int, Any, Any]] = []
        for index, alert in alerts:
            try:  # one alert's routing or serialising failing costs that alert only
                decision = route(alert, routes, settings.runbooks_dir)
                alert_json = alert.model_dump(mode="json")
                if decision.routed:
                    spooled.append((index, alert, decision, spool_text({"alert": alert_json, "decision": asdict(decision)})))
                else:
                    only_logged.append((index, alert, decision))
            except Exception as exc:
                log.exception("alert #%d from %s could not be routed", index, source_name)
                rejected.append({"index": index, "error": f"could not be routed or stored: {type(exc).__name__}: {exc}"})
        log_rejected(source_name, rejected)

        try:
            for index, alert, decision in only_logged:  # kept only here: if this fails the sender must retry
                await run_in_threadpool(store.record_unrouted, alert.model_dump(mode="json"), decision.reason)
            ids = await run_in_threadpool(web_store.append, [text for *_, text in spooled])
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot store alerts from %s: %s", source_name, exc)
            return error(503, f"the intake cannot store alerts right now ({type(exc).__name__}: {exc}); retry later", source)
        for _, alert, decision, _ in spooled:
            if decision.unrouted:  # also logged, for whoever writes routes; the spool already keeps it
                try:
                    await run_in_threadpool(store.record_unrouted, alert.model_dump(mode="json"), decision.reason)
                except (OSError, sqlite3.Error, ValueError) as exc:
                    log.error("could not append to %s: %s", store.unrouted_path, exc)
        drainer.wake()

        accepted, unrouted = [], []
        for (index, alert, decision, _), sid in zip(spooled, ids):
            entry = {"index": index, "fingerprint": alert.fingerprint, "status": alert.status,
                     "runbook": decision.runbook or decision.route, "spool_id": sid}
            if decision.unrouted:
                unrouted.append({**entry, "reason": decision.reason})
            else:
                accepted.append(entry)
        unrouted += [{"index": index, "fingerprint": alert.fingerprint, "reason": decision.reason}
                     for index, alert, decision in only_logged]
        unrouted.sort(key=lambda u: u["index"])
        answer = {"accepted": accepted, "unrouted": unrouted, "rejected": sorted(rejected, key=lambda r: r["index"])}
        if ignored:
            answer["ignored"] = ignored
        return SafeJSONResponse(source.answer(answer, [a for _, a in alerts]), status_code=202)

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

    @app.post("/alerts/pagerduty", status_code=202)
    async def pagerduty(request: Request):
        """PagerDuty Events API v2 (one event: trigger, acknowledge or resolve)."""
        return await receive("pagerduty", request)

    @app.post("/v2/enqueue", status_code=202)
    async def pagerduty_enqueue(request: Request):
        """The path PagerDuty senders post to (https://events.pagerduty.com/v2/enqueue): point their host here."""
        return await receive("pagerduty", request)

    @app.get("/healthz")
    async def healthz():
        """``prefect_reachable`` is true only once a health check or a handed-over alert showed it."""
        checked = drainer.prefect_checked_at
        health = {"prefect_reachable": drainer.prefect_reachable and checked is not None,
                  "prefect_checked_at": checked.isoformat() if checked else None}
        try:
            pending = await run_in_threadpool(store.pending_count)
        except (OSError, sqlite3.Error) as exc:
            return SafeJSONResponse({"status": "error", "error": f"spool unreadable: {exc}", **health}, status_code=503)
        return {"status": "ok", "spool_pending": pending, **health}

    app.include_router(inbound.router)
    return app


def log_rejected(source_name: str, rejected: list[dict[str, Any]]) -> None:
    for r in rejected:
        text = r["error"] if len(r["error"]) <= 300 else r["error"][:300] + "..."
        log.warning("rejected alert #%d from %s: %s", r["index"], source_name, text.encode("utf-8", "backslashreplace").decode("utf-8"))
