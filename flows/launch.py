"""Starting incidents on the served deployments, and telling them their alert resolved.

``start_incident`` is for one incident at a time (the CLI, tests, recovery): Prefect's
``run_deployment``, a client of its own per call. ``Launcher`` is for a caller that starts
many (the alert intake's drainer): one client kept open, the deployments' ids kept by name,
the same idempotency semantics (the same key gives the same run).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Iterable
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from tasks.inputs import deliver_resolution, read_resolution  # noqa: F401  (the intake hands resolutions over here)

DEPLOYMENT = "runbook"
PAGE = 200  # flow runs read per request (the server's default limit)
BULK = 100  # flow runs created per request (the most Prefect's bulk create takes)


def deployment_name(runbook_id: str) -> str:
    return f"{runbook_id}/{DEPLOYMENT}"


def python_name(runbook_id: str) -> str:
    """The module-level name a runbook's flow is bound to in flows/catalog.py (its deployment entrypoint)."""
    return runbook_id.replace("-", "_")


def run_parameters(parameters: dict[str, Any] | None = None, *, severity: str | None = None, drill: bool = False,
                   alert: dict | None = None, incident: str | None = None, time_scale: float = 1.0, auto: bool = False,
                   answers: dict | None = None, clock: datetime | None = None) -> dict[str, Any]:
    """The flow parameters of an incident's run (docs/ARCHITECTURE.md, "Flows")."""
    values = {"parameters": parameters or {}, "severity": severity, "drill": drill, "alert": alert,
              "incident": incident, "time_scale": time_scale, "auto": auto, "answers": answers}
    if clock is not None:  # only a drill that sets its clock sends it: runs of older deployments take them as before
        values["clock"] = clock.isoformat()
    return values


def run_tags(runbook_id: str, drill: bool) -> list[str]:
    return [f"runbook:{runbook_id}"] + (["drill"] if drill else [])


def start_incident(runbook_id: str, parameters: dict[str, Any] | None = None, *, severity: str | None = None,
                   drill: bool = False, idempotency_key: str | None = None, alert: dict | None = None,
                   incident: str | None = None, time_scale: float = 1.0, auto: bool = False,
                   answers: dict | None = None, clock: datetime | None = None) -> FlowRun:
    """Create a run of the runbook's deployment and return at once; the same idempotency key gives the same run."""
    return run_deployment(
        deployment_name(runbook_id),
        parameters=run_parameters(parameters, severity=severity, drill=drill, alert=alert, incident=incident,
                                  time_scale=time_scale, auto=auto, answers=answers, clock=clock),
        idempotency_key=idempotency_key,
        tags=run_tags(runbook_id, drill),
        timeout=0,
    )


CLOSED = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED]  # an incident's run in any other state is open


def incident_open(run: FlowRun) -> bool:
    """Whether an incident's run is still open: not Completed, Failed or Cancelled.

    A Crashed run is open: its process died (Prefect unreachable, a machine lost) and the escalation
    watcher sets it going again (flows/recovery.py), so a later alert of its group joins it."""
    return run.state is None or run.state.type not in CLOSED


RETRIED_ANSWERS = frozenset({408, 429, 502, 503})  # the answers Prefect's client retries (prefect/client/base.py)
REQUEST_TIMEOUT = httpx.Timeout(20.0, connect=5.0)  # the Launcher's requests; Prefect's default is 60 s for each


class PrefectUnavailable(ConnectionError):
    """Prefect cannot take the request now: worth asking again later."""


class PrefectUnreachable(PrefectUnavailable):
    """The connection was refused, or Prefect did not answer in time: every request would fail alike."""


class PrefectBusy(PrefectUnavailable):
    """Prefect answered that it cannot take this request now (503 while its database is locked, 429, ...)."""


class FailFast(httpx.HTTPTransport):
    """Whatever Prefect's client would retry on its own, except a broken connection, raises at once instead.

    Prefect's client retries a refused connection (once it has connected), a timeout, and the answers
    408, 429, 502 and 503 up to 5 times, 2 to 32 s apart: over a minute for one call, longer when each
    try waits for a timeout. A Prefect server on SQLite just back from an outage answers 503 (database
    locked) to many requests for a minute or more while its runs, runners and services catch up, so a
    long-lived client's caller with a backoff of its own (the intake's drainer) sat in those retries,
    and a batch's other alerts waited for it. Here each such failure raises at once, as
    ``PrefectUnreachable`` (refused, or no answer within ``REQUEST_TIMEOUT``) or ``PrefectBusy`` (one
    of those answers), and the caller's backoff decides when to ask again. A connection broken mid-answer (a read or
    write error, a stale keep-alive connection) is still retried by Prefect's client: the retry fails
    fast or succeeds."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        where = f"{request.url.host}:{request.url.port}"
        try:
            response = super().handle_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise PrefectUnreachable(f"cannot reach Prefect at {where}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise PrefectUnreachable(f"Prefect at {where} did not answer {request.method} {request.url.path} "
                                     f"in time ({type(exc).__name__})") from exc
        if response.status_code in RETRIED_ANSWERS:
            try:
                response.read()
            finally:
                response.close()
            raise PrefectBusy(f"Prefect at {where} answered {response.status_code} to {request.method} "
                                     f"{request.url.path}: {response.text[:200]}")
        return response


def _bulk_run(runbook_id: str, start: dict[str, Any]) -> dict[str, Any]:
    """One run of a bulk create: what ``start_incident`` sends for these keyword arguments."""
    values = dict(start)
    key, parameters = values.pop("idempotency_key"), values.pop("parameters", None)
    return {"parameters": run_parameters(parameters, **values), "idempotency_key": key,
            "tags": run_tags(runbook_id, bool(values.get("drill")))}


class Launcher:
    """Starts incidents, and reads whether they are open, through one Prefect client kept open.

    The client is made on first use (with the settings of the thread that first uses it) and
    shared by threads (httpx's client is thread-safe); ``close()`` ends it. A deployment's id is
    read by name once; when the server answers 404 for it (the deployment was made again, under
    a new id) it is read again and the run created once more, with the same idempotency key."""

    def __init__(self) -> None:
        self._client: SyncPrefectClient | None = None
        self._ids: dict[str, UUID] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> SyncPrefectClient:
        with self._lock:
            if self._client is None:
                client = get_client(httpx_settings={"transport": FailFast(), "timeout": REQUEST_TIMEOUT}, sync_client=True)
                client.__enter__()
                self._client = client
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.__exit__(None, None, None)

    def deployment_id(self, runbook_id: str, *, again: bool = False) -> UUID:
        """The id of the runbook's deployment; raises ObjectNotFound when there is none."""
        if again or runbook_id not in self._ids:
            self._ids[runbook_id] = self.client.read_deployment_by_name(deployment_name(runbook_id)).id
        return self._ids[runbook_id]

    def start_incident(self, runbook_id: str, parameters: dict[str, Any] | None = None, *, severity: str | None = None,
                       drill: bool = False, idempotency_key: str | None = None, alert: dict | None = None,
                       incident: str | None = None, time_scale: float = 1.0, auto: bool = False,
                       answers: dict | None = None, clock: datetime | None = None) -> FlowRun:
        """As ``start_incident``: a Scheduled run of the runbook's deployment; the same key gives the same run."""
        values = run_parameters(parameters, severity=severity, drill=drill, alert=alert, incident=incident,
                                time_scale=time_scale, auto=auto, answers=answers, clock=clock)

        def create(deployment_id: UUID) -> FlowRun:
            return self.client.create_flow_run_from_deployment(deployment_id, parameters=values, idempotency_key=idempotency_key,
                                                               tags=run_tags(runbook_id, drill))

        try:
            return create(self.deployment_id(runbook_id))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        return create(self.deployment_id(runbook_id, again=True))

    def start_incidents(self, runbook_id: str, starts: list[dict[str, Any]]) -> dict[str, UUID]:
        """Many incidents of one runbook at once (each as ``start_incident``'s keyword arguments, with an
        idempotency key): Prefect's bulk create, one request per 100 runs, each created as ``start_incident``
        would, the same key giving the same run. Returns the run of each key known created; for a key missing from it
        (the server refused that run, or a later request failed and may or may not have made it) ``start_incident``
        gives the run, or the error. A first request that fails raises.

        One request for many runs costs the server about half of what as many single creates do (measured:
        48 runs/s against 25 with four at a time), and a storm's drain waits on little else."""
        created: dict[str, UUID] = {}
        for first in range(0, len(starts), BULK):
            page = starts[first:first + BULK]
            try:
                results = self._bulk_create(self.deployment_id(runbook_id), [_bulk_run(runbook_id, one) for one in page])
            except Exception:
                if not created:
                    raise
                break  # what the pages before made is kept
            created.update({one["idempotency_key"]: UUID(result["flow_run_id"]) for one, result in zip(page, results)
                            if result.get("status") == "CREATED" and result.get("flow_run_id")})
        return created

    def _bulk_create(self, deployment_id: UUID, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self.client.request("POST", "/deployments/{id}/create_flow_run/bulk",  # type: ignore[arg-type]
                                       path_params={"id": deployment_id}, json=body)
        results = response.json().get("results", [])
        if len(results) != len(body):
            raise ValueError(f"Prefect's bulk create answered {len(results)} results for {len(body)} runs")
        return results

    def run_is_open(self, flow_run_id: str) -> bool:
        try:
            return incident_open(self.client.read_flow_run(UUID(flow_run_id)))
        except ObjectNotFound:
            return False

    def open_runs(self, flow_run_ids: Iterable[str]) -> set[str]:
        """Which of these incidents are open (a run that no longer exists is closed), per 200.

        First a count of those not closed: when it is all of them (a storm's incidents, nearly always) that is the
        answer, and the server counts rows instead of sending each run (its parameters carry its alert) to be parsed
        here: reading 60 runs was a quarter of a storm's drain. Else each run is read and judged by `incident_open`."""
        ids = sorted(set(flow_run_ids))
        open_ids: set[str] = set()
        for start in range(0, len(ids), PAGE):
            page = [UUID(i) for i in ids[start:start + PAGE]]
            by_id = FlowRunFilterId(any_=page)
            not_closed = FlowRunFilter(id=by_id, state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=CLOSED)))
            if self.client.count_flow_runs(flow_run_filter=not_closed) == len(page):
                open_ids.update(map(str, page))
                continue
            runs = self.client.read_flow_runs(flow_run_filter=FlowRunFilter(id=by_id), limit=len(page))
            open_ids.update(str(run.id) for run in runs if incident_open(run))
        return open_ids

    def health(self) -> BaseException | None:
        """None when the Prefect API answers its health check, else what went wrong."""
        return self.client.api_healthcheck()
