"""Settings every channel shares: where the inbound router is reachable and how links are signed.

Channel-specific settings (tokens, webhook URLs) live beside each channel. All of
them read environment variables with the RUNBOOK_ prefix each time a channel is
built, so a changed secret takes effect without a restart and tests can set them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifyConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_", extra="ignore")

    public_url: str | None = Field(None, description="Base address at which the FastAPI app (and so the inbound router) is reachable from outside, e.g. https://runbook.example.org. Needed for voice key presses and signed links.")
    link_secret: SecretStr | None = Field(None, description="HMAC key for signed answer links.")
    link_ttl_seconds: int = Field(24 * 3600, description="How long a signed answer link stays valid.")

    def public(self, path: str) -> str | None:
        if not self.public_url:
            return None
        return self.public_url.rstrip("/") + path


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
