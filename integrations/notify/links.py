"""Signed answer links: a URL that lets one named person answer one waiting step, until it expires.

token = base64url(claims JSON) "." base64url(HMAC-SHA256(RUNBOOK_LINK_SECRET, first part)).
The claims name the person, so whoever clicks answers as that person — which is
why links are made per recipient and expire. Opening a link (GET) only shows the
choices; answering takes a POST, so mail scanners and chat previews that fetch
links cannot answer by accident.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from integrations.notify import choices
from integrations.notify.config import NotifyConfig, secret

LINK_PATH = "/notify/link"


class LinkError(Exception):
    """The link is malformed, forged, or expired."""


MAC_BYTES = 16  # 128-bit HMAC tag: plenty against forgery, and keeps links short enough for an SMS


class LinkClaims(BaseModel):
    """What a link lets its holder do. Short JSON keys keep the URL short."""

    model_config = ConfigDict(populate_by_name=True)

    incident_id: str = Field(alias="i")
    step_id: str | None = Field(None, alias="s")
    person: str = Field(alias="p")
    options: list[str] = Field(alias="o")
    language: str = Field("zh", alias="l")
    exp: int = Field(alias="e", description="Expiry, Unix seconds.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(config: NotifyConfig) -> bytes:
    key = secret(config.link_secret)
    if not key:
        raise LinkError("RUNBOOK_LINK_SECRET is not set")
    return key.encode()


def make_token(claims: LinkClaims, config: NotifyConfig | None = None) -> str:
    config = config or NotifyConfig()
    body = _b64(json.dumps(claims.model_dump(by_alias=True, exclude_defaults=True), separators=(",", ":"), ensure_ascii=False).encode())
    mac = _b64(hmac.new(_key(config), body.encode(), hashlib.sha256).digest()[:MAC_BYTES])
    return f"{body}.{mac}"


def make_link(incident_id: str, step_id: str | None, person: str, options: list[str] | None = None, *,
              language: str = "zh", ttl_seconds: int | None = None, config: NotifyConfig | None = None) -> str:
    """A link for `person` to answer `step_id` of incident `incident_id` with one of `options` (default: acknowledge)."""
    config = config or NotifyConfig()
    if not config.public_url:
        raise LinkError("RUNBOOK_PUBLIC_URL is not set, so there is no address for links")
    offered = choices.options_of(options or [], True)
    if not offered:
        raise LinkError(f"none of {', '.join(options or [])} can be answered by a link; the form is in the run's UI")
    claims = LinkClaims(incident_id=incident_id, step_id=step_id, person=person,
                        options=offered, language=language,
                        exp=int(time.time()) + (ttl_seconds or config.link_ttl_seconds))
    return config.public(f"{LINK_PATH}/{make_token(claims, config)}")


def verify(token: str, *, config: NotifyConfig | None = None, now: float | None = None) -> LinkClaims:
    """The claims of a genuine, unexpired token; LinkError otherwise."""
    config = config or NotifyConfig()
    body, _, mac = token.partition(".")
    if not body or not mac:
        raise LinkError("malformed link")
    expected = hmac.new(_key(config), body.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    try:
        given = _unb64(mac)
    except ValueError as e:
        raise LinkError("malformed link") from e
    if not hmac.compare_digest(expected, given):
        raise LinkError("link signature does not verify")
    try:
        claims = LinkClaims.model_validate_json(_unb64(body))
    except (ValueError, ValidationError) as e:
        raise LinkError("malformed link") from e
    if (now if now is not None else time.time()) > claims.exp:
        raise LinkError("link has expired")
    return claims
