"""Generic JSON webhook: the whole Message as JSON, for ticketing systems and in-house pagers.

`to` is either a URL or the name of one in RUNBOOK_WEBHOOK_URLS (for URLs that carry
a credential). With RUNBOOK_WEBHOOK_SECRET set, the body is signed so the receiver
can check it came from us: X-Runbook-Signature: sha256=hex(HMAC(secret, f"{timestamp}.{body}")).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.notify.base import Channel, ChannelError, Message, register
from integrations.notify.config import secret
from integrations.notify.jsonpost import post_json

BODY_MAX_BYTES = 1_000_000  # our own cap: a page is never this big unless something is wrong
SIGNATURE_HEADER = "X-Runbook-Signature"
TIMESTAMP_HEADER = "X-Runbook-Timestamp"


class WebhookConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_WEBHOOK_", extra="ignore")

    urls: dict[str, SecretStr] = Field(default_factory=dict, description="Named webhook URLs (JSON object).")
    token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer <token>'.")
    secret: SecretStr | None = Field(None, description="HMAC key that signs each body.")
    timeout: float = 10


def signature(key: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@register
class WebhookChannel(Channel):
    name = "webhook"

    def __init__(self, config: WebhookConfig | None = None):
        self.config = config or WebhookConfig()

    def secrets(self) -> list[str]:
        values = [secret(self.config.token), secret(self.config.secret)] + [secret(u) for u in self.config.urls.values()]
        return [v for v in values if v]

    def send(self, message: Message, to: str) -> str | None:
        if to in self.config.urls:
            url = self.config.urls[to].get_secret_value()
        elif to.startswith(("http://", "https://")):
            url = to
        else:
            raise ChannelError(f"webhook '{to}' is neither a URL nor named in RUNBOOK_WEBHOOK_URLS", permanent=True)
        body = json.dumps({**message.model_dump(mode="json"), "headline": message.headline()}, ensure_ascii=False).encode()
        if len(body) > BODY_MAX_BYTES:
            raise ChannelError("message too large for the webhook", permanent=True)
        headers = {}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        if self.config.secret:
            ts = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = signature(self.config.secret.get_secret_value(), ts, body)
        reply = post_json(url, {}, data=body, headers=headers, timeout=self.config.timeout)
        return str(reply.get("id")) if isinstance(reply, dict) and reply.get("id") is not None else None
