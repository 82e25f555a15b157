"""Site configuration: the endpoints that runbook actions and probes address.

A runbook says `endpoint: firewall.block-address`; the site says which firewall
that is, and which harmless target a drill uses instead. Nothing in a runbook is
hard-wired to one vendor.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from runbooks.model import Duration
from runbooks.yamlfile import load_cached


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Address of the real system; may use {{ args.x }} templates.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, description="Headers; a value '${ENV_NAME}' is read from the environment.")
    drill_url: str | None = Field(None, description="Where a drill sends the same request. Without it a drill records the request and sends nothing.")
    timeout: Duration = Field(timedelta(seconds=10))
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", description="Site name, shown in messages.")
    time_zone: ZoneInfo = Field(ZoneInfo("UTC"), description="IANA time zone (e.g. Asia/Shanghai) of every time people read: "
                                "reports, the CLI, pages, forms. Stored records stay in UTC.")
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)


def load_site(path: Path) -> Site:
    """The site file's endpoints (read once per version of the file; treat as read-only)."""
    return load_cached(path, Site.model_validate, Site)
