"""Where the project finds its files and secrets.

Values come from environment variables with the ``RUNBOOK_`` prefix, then from
``runbook.toml`` in the working directory (or the file named by
``RUNBOOK_CONFIG``), then from the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_", extra="ignore")

    runbooks_dir: Path = Field(PROJECT_ROOT / "runbooks", description="Folder of runbook YAML files.")
    contacts_file: Path = Field(PROJECT_ROOT / "config" / "contacts.yaml", description="People, their roles and channels.")
    site_file: Path = Field(PROJECT_ROOT / "config" / "site.yaml", description="Endpoints and callables that action steps address.")
    routes_file: Path = Field(PROJECT_ROOT / "config" / "routes.yaml", description="Alert routing rules.")
    incidents_dir: Path = Field(Path("incidents"), description="Where finished incidents are archived (JSON + HTML).")
    state_dir: Path = Field(Path("var"), description="Working state: alert spool, intake ledger.")
    ui_url: str | None = Field(None, description="Base address of the Prefect UI, for links in messages. Defaults to PREFECT_UI_URL.")
    intake_host: str = Field("127.0.0.1", description="Alert intake listen address.")
    intake_port: int = Field(8787, description="Alert intake listen port.")
    intake_token: SecretStr | None = Field(None, description="Bearer token (or basic-auth password) the alert intake requires.")
    grafana_secret: SecretStr | None = Field(None, description="HMAC secret Grafana signs its webhooks with.")
    serve_limit: int | None = Field(None, ge=1, description="Most incidents the served stack (`runbook up`) runs at once; more wait Scheduled for a free one. Suspended waits hold none.")
    answer_poll_seconds: float = Field(1.0, description="How often a waiting step checks for an answer.")
    suspend_wait_after: float = Field(30.0, ge=0, description="Real seconds left above which a `wait` step on a deployment suspends its run (its process exits) until its end; a shorter rest is slept in the process.")
    max_recoveries: int = Field(3, ge=0, description="Times the escalation watcher starts a crashed incident again by itself before it pages the runbook's lead instead.")
    dead_after_seconds: float = Field(50, gt=0, description="A running incident with no flow-run heartbeat for this long (workers send one every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds, 30 in the stack) is taken as dead, its machine gone, and recovered like a crashed one; the watcher waits at least 1.5 heartbeat periods of its own setting whatever this says.")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        toml_file = Path(os.environ.get("RUNBOOK_CONFIG", "runbook.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file), file_secret_settings)


@lru_cache
def get_settings() -> Settings:
    return Settings()
