"""What SMS and voice share: Twilio credentials, a client that can be pointed elsewhere, error mapping.

The twilio library builds absolute URLs on https://api.twilio.com and offers no
base-URL option (region/edge only rewrite the host inside twilio.com), so a small
HttpClient subclass rewrites that prefix when RUNBOOK_TWILIO_BASE_URL is set. It
also keeps the last response, whose Retry-After the library's exception drops.
"""

from __future__ import annotations

import requests
from pydantic import AliasChoices, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from integrations.notify.base import ChannelError
from integrations.notify.config import secret
from integrations.notify.jsonpost import RETRY_AFTER_DEFAULT, retry_after_seconds

TWILIO_API = "https://api.twilio.com"

# Twilio error codes that no retry will fix (www.twilio.com/docs/api/errors).
PERMANENT_CODES = {
    20003,  # authentication failed
    21211,  # invalid 'To' number
    21214,  # 'To' number cannot be reached
    21408,  # region not enabled
    21610,  # recipient unsubscribed (replied STOP)
    21614,  # 'To' is not a mobile number
    21606,  # 'From' number cannot send SMS
}


class TwilioConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_TWILIO_", extra="ignore", populate_by_name=True)

    account_sid: str | None = Field(None, description="Account SID (AC...).")
    auth_token: SecretStr | None = Field(None, description="Auth token; also verifies X-Twilio-Signature on webhooks.")
    from_number: str | None = Field(None, validation_alias=AliasChoices("from_number", "RUNBOOK_TWILIO_FROM"),
                                    description="Sending number in E.164 (RUNBOOK_TWILIO_FROM).")
    base_url: str | None = Field(None, description="Replaces https://api.twilio.com; tests point it at a local server.")
    timeout: float = Field(10, description="Seconds to wait for Twilio.")


class _HttpClient(TwilioHttpClient):
    def __init__(self, base_url: str | None, timeout: float):
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.last_response = None

    def request(self, method, url, *args, **kwargs):
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        self.last_response = None
        self.last_response = super().request(method, url, *args, **kwargs)
        return self.last_response


def client(config: TwilioConfig) -> Client:
    token = secret(config.auth_token)
    if not (config.account_sid and token and config.from_number):
        raise ChannelError("Twilio is not configured: set RUNBOOK_TWILIO_ACCOUNT_SID, RUNBOOK_TWILIO_AUTH_TOKEN and RUNBOOK_TWILIO_FROM",
                           permanent=True)
    return Client(config.account_sid, token, http_client=_HttpClient(config.base_url, config.timeout))


def call(twilio: Client, fn, what: str):
    """Run one Twilio API call and turn its failures into ChannelError."""
    try:
        return fn()
    except (TwilioRestException, TwilioServiceException) as e:
        raise _error(twilio, e, what) from e
    except requests.Timeout as e:
        raise ChannelError(f"Twilio did not answer ({what})") from e
    except (requests.RequestException, TwilioException, OSError) as e:
        raise ChannelError(f"could not reach Twilio ({what}): {type(e).__name__}") from e


def _error(twilio: Client, e: Exception, what: str) -> ChannelError:
    status = getattr(e, "status", None)
    code = getattr(e, "code", None)
    text = getattr(e, "msg", None) or getattr(e, "detail", None) or getattr(e, "title", "") or ""
    desc = f"Twilio {what} failed: HTTP {status}" + (f", code {code}" if code else "") + (f": {text}" if text else "")
    if status == 429:
        last = getattr(twilio.http_client, "last_response", None)
        retry = retry_after_seconds((last.headers or {}).get("Retry-After")) if last is not None else None
        return ChannelError(desc, retry_after=retry if retry is not None else RETRY_AFTER_DEFAULT)
    if status is not None and status >= 500:
        return ChannelError(desc)
    return ChannelError(desc, permanent=code in PERMANENT_CODES or status in (400, 401, 403, 404))
