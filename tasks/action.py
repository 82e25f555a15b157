"""Action steps: do something to a system, by HTTP.

An action addresses an endpoint named in site configuration (which knows the
drill target) or an inline HTTP request. In a drill an endpoint without a drill
target is recorded and not called. Checks probe the same way (`perform`).
"""

from __future__ import annotations

import os
import re
from typing import Any

import requests

from runbooks.expressions import render
from runbooks.model import ActionStep, HttpRequest, Target
from tasks.incident import Incident
from tasks.steps import Walk, runs, runs_beside, step_task

class ActionFailed(Exception):
    pass


_ENV = re.compile(r"\$\{([A-Z0-9_]+)\}")


def _render_value(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
    return value


def _env_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: _ENV.sub(lambda m: os.environ.get(m.group(1), ""), v) for k, v in headers.items()}


def perform(target: Target, context: dict[str, Any], *, site, drill: bool, limit: float | None = None) -> dict[str, Any]:
    """Carry out an action or a probe and return what happened (status, body).

    `limit` is the step's timeout: it also bounds the HTTP request, because a task
    timeout cannot interrupt a blocking call already under way.
    """
    args = _render_value(target.args, context)
    if target.endpoint:
        endpoint = site.endpoints.get(target.endpoint)
        if endpoint is None:
            raise ActionFailed(f"endpoint '{target.endpoint}' is not in the site configuration; add it to config/site.yaml")
        url = endpoint.drill_url if drill else endpoint.url
        if url is None:
            return {"drill": True, "sent": False, "endpoint": target.endpoint, "args": args}
        request = HttpRequest(method=endpoint.method, url=url, headers=endpoint.headers, json=args or None,
                              expect_status=endpoint.expect_status, timeout=endpoint.timeout)
        return _http(request, {**context, "args": args}, limit)
    return _http(target.http, {**context, "args": args}, limit)


def _http(request: HttpRequest, context: dict[str, Any], limit: float | None = None) -> dict[str, Any]:
    url = render(request.url, context)
    timeout = min(request.timeout.total_seconds(), limit) if limit else request.timeout.total_seconds()
    try:
        response = requests.request(request.method, url, headers=_env_headers(_render_value(request.headers, context)),
                                    json=_render_value(request.json_body, context), timeout=timeout)
    except requests.RequestException as exc:
        raise ActionFailed(f"{request.method} {_safe(url)} failed: {type(exc).__name__}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:2000]
    outcome = {"status_code": response.status_code, "body": body}
    if response.status_code not in request.expect_status:
        raise ActionFailed(f"{request.method} {_safe(url)} answered {response.status_code}, expected {request.expect_status}")
    return outcome


def _safe(url: str) -> str:
    """The address without its query string, which may carry a token."""
    return url.split("?", 1)[0]


@runs("action")
def run(inc: Incident, step: ActionStep, walk: Walk) -> dict:
    def act(step_id: str) -> dict:
        return act_now(inc, step)

    return step_task(step, act, inc)(step.id)


@runs_beside("action")
def act_now(inc: Incident, step: ActionStep) -> dict:
    """The action itself, as a plain call (a time rule runs it so, beside the main line)."""
    limit = step.timeout.total_seconds() if step.timeout else None
    return {"result": perform(step, inc.context(), site=inc.site, drill=inc.drill, limit=limit)}
