"""Who may post alerts.

* ``RUNBOOK_INTAKE_TOKEN`` set -> every request needs ``Authorization: Bearer <token>``
  (Alertmanager ``http_config.authorization``, Grafana "Authorization header") or
  HTTP basic auth with the token as password (any user name), for senders that only do basic;
  PagerDuty Events v2 senders may instead carry it as the event's ``routing_key``.
* ``RUNBOOK_GRAFANA_SECRET`` set -> ``/alerts/grafana`` also needs Grafana's HMAC signature:
  hex HMAC-SHA256 of the raw body, or of ``<timestamp>:<body>`` when Grafana is configured
  with a timestamp header; the timestamp (Unix seconds) must then be within ``MAX_SKEW``.
  Grafana's form suggests the header ``X-Grafana-Alerting-Signature``; some Grafana
  versions default to ``X-Grafana-Alert-Signature`` when the field is left empty, so both are read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

SIGNATURE_HEADERS = ("X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature")
TIMESTAMP_HEADERS = ("X-Grafana-Alerting-Timestamp", "X-Grafana-Alerting-Signature-Timestamp")
MAX_SKEW = 300  # seconds a signed Grafana request may be old (or early): replays after that are refused


class AuthError(Exception):
    """Refused; ``status`` is 401 (who are you) and the message says what to configure."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


def check_token(authorization: str | None, token: str) -> None:
    if not authorization:
        raise AuthError("this intake requires a token: send 'Authorization: Bearer <RUNBOOK_INTAKE_TOKEN>' "
                        "(or basic auth with the token as password)")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        given = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("basic credentials are not valid base64 of 'user:password'") from None
        given = decoded.partition(":")[2]
    else:
        raise AuthError(f"authorization scheme '{scheme}' is not accepted; use Bearer or Basic")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthError("wrong token; use the value of RUNBOOK_INTAKE_TOKEN")


def grafana_signature(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """What Grafana puts in its signature header (also used by tests and docs)."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    if timestamp:
        mac.update(timestamp.encode() + b":")
    mac.update(body)
    return mac.hexdigest()


def check_grafana_signature(headers, body: bytes, secret: str, now: float | None = None) -> None:
    signature = next((headers[h] for h in SIGNATURE_HEADERS if headers.get(h)), None)
    if not signature:
        raise AuthError("Grafana signature missing: set the contact point's HMAC secret to RUNBOOK_GRAFANA_SECRET "
                        f"and its header to {SIGNATURE_HEADERS[0]}")
    timestamp = next((headers[h] for h in TIMESTAMP_HEADERS if headers.get(h)), None)
    if timestamp is not None:
        try:
            age = (now or time.time()) - int(timestamp)
        except ValueError:
            raise AuthError(f"Grafana timestamp {timestamp!r} is not Unix seconds") from None
        if abs(age) > MAX_SKEW:
            raise AuthError(f"Grafana timestamp is {int(age)} s off; requests older than {MAX_SKEW} s are refused as replays "
                            "(check the clocks of Grafana and this host)")
    expected = grafana_signature(secret, body, timestamp)
    if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise AuthError("Grafana signature does not match the body; check that the contact point's HMAC secret "
                        "equals RUNBOOK_GRAFANA_SECRET")


def check_routing_key(event: object, token: str) -> None:
    """PagerDuty senders carry their secret as the event's ``routing_key`` (the integration key), not as a header."""
    routing_key = event.get("routing_key") if isinstance(event, dict) else None
    if not isinstance(routing_key, str) or not routing_key:
        raise AuthError("this intake requires a token: send 'Authorization: Bearer <RUNBOOK_INTAKE_TOKEN>', "
                        "or (PagerDuty senders) the token as the event's routing_key")
    if not hmac.compare_digest(routing_key.encode("utf-8", "surrogatepass"), token.encode()):
        raise AuthError("wrong routing_key; use the value of RUNBOOK_INTAKE_TOKEN as the integration key")
