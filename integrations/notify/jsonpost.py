"""JSON-over-HTTP posting shared by the webhook channels, with one error mapping.

DingTalk, WeCom and Feishu all answer HTTP 200 with an error code in the body, so
each channel passes a `check` that turns the body into a ChannelError.
"""

from __future__ import annotations

from typing import Any, Callable

import requests
from urllib3.exceptions import NewConnectionError

from integrations.notify.base import ChannelError
from integrations.notify.redact import mask_url

RETRY_AFTER_DEFAULT = 60.0  # seconds, when a platform says "too fast" but not for how long


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds; dates are rare from these APIs and treated as absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _never_connected(e: requests.RequestException) -> bool:
    """Connection refused or no route: the request cannot have arrived (a reset mid-answer may have)."""
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return isinstance(e, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def post_json(url: str, payload: dict[str, Any], *, timeout: float, headers: dict[str, str] | None = None,
              check: Callable[[dict[str, Any]], None] | None = None, data: bytes | None = None) -> dict[str, Any]:
    """POST and return the JSON reply, or raise ChannelError with the URL masked."""
    where = mask_url(url)
    try:
        if data is not None:
            resp = requests.post(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, timeout=timeout)
        else:
            resp = requests.post(url, json=payload, headers=headers, timeout=timeout)
    except requests.ConnectTimeout as e:
        raise ChannelError(f"could not connect to {where} within {timeout:g} s", unsent=True) from e
    except requests.Timeout as e:
        raise ChannelError(f"no answer from {where} within {timeout:g} s") from e
    except requests.RequestException as e:
        raise ChannelError(f"could not reach {where}: {type(e).__name__}", unsent=_never_connected(e)) from e
    if resp.status_code == 429:
        raise ChannelError(f"{where} says too many requests (HTTP 429)", throttled=True,
                           retry_after=retry_after_seconds(resp.headers.get("Retry-After")) or RETRY_AFTER_DEFAULT)
    if resp.status_code >= 500:
        raise ChannelError(f"{where} failed with HTTP {resp.status_code}")
    if resp.status_code >= 400:
        raise ChannelError(f"{where} refused the message with HTTP {resp.status_code}", permanent=True)
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        body = {}
    if check is not None and isinstance(body, dict):
        check(body)
    return body
