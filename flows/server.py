"""Where the Prefect server is, and whether it answers.

`runbook up` writes a small record of where its server runs into the Prefect home
(`runbook-stack.json`) and removes it when it stops, so the other commands find a
stack on any port without being told. PREFECT_API_URL, when set, always wins.

Prefect reads its settings when it is imported; `use_server` makes an address
chosen afterwards take effect.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

from prefect.context import refresh_global_settings_context

DEFAULT_API = "http://127.0.0.1:4200/api"  # where `runbook up` listens unless told otherwise
STACK_FILE = "runbook-stack.json"
HEALTH_TIMEOUT_SECONDS = 2.0
# A running incident holds a lease on one of its runbook's concurrency slots and renews it every few minutes. Prefect
# keeps leases in the server's memory by default, so after a server restart every renewal is refused (410) and Prefect
# cancels the run: each incident running through a restart crashed once (the watcher healed it, spending a recovery).
# On disk under PREFECT_HOME they outlive the restart. (More than one server process needs Prefect's Redis storage.)
SERVER_SETTINGS = {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}


def prefect_home() -> Path:
    """Prefect's home folder, as Prefect itself resolves it by default (PREFECT_HOME, else ~/.prefect)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def stack_file() -> Path:
    return prefect_home() / STACK_FILE


def record_stack(api_url: str, ui_url: str) -> Path:
    """Say where this process's stack runs (written by `runbook up` once its server answers)."""
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"api_url": api_url, "ui_url": ui_url, "pid": os.getpid(),
                               "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}), encoding="utf-8")
    tmp.replace(path)
    return path


def forget_stack() -> None:
    """Remove the record when it is this process's (a later `runbook up` may have replaced it)."""
    path = stack_file()
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def recorded_stack() -> dict | None:
    """The record of a running `runbook up`, or None (no record, unreadable, or its process is gone)."""
    try:
        record = json.loads(stack_file().read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def unreachable_reason(api_url: str) -> str | None:
    """None when the server answers its health check, else why not, in a few words."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_SECONDS)
    except httpx.ConnectError:
        return "connection refused"
    except httpx.TimeoutException:
        return f"no answer within {HEALTH_TIMEOUT_SECONDS:g} s"
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None if response.status_code == 200 else f"health check answered HTTP {response.status_code}"


@dataclass
class ServerLookup:
    """The outcome of looking for the server: its address, or everywhere we looked and why each failed."""

    api_url: str | None
    source: str
    tried: list[tuple[str, str]]  # (where, why not)

    @property
    def found(self) -> bool:
        return self.api_url is not None

    def explain(self) -> str:
        lines = ["no Prefect server is reachable:"]
        lines += [f"  {where}: {why}" for where, why in self.tried]
        lines += ["start one with `runbook up` (it is found on any port), or point at a running one with",
                  "  PREFECT_API_URL=http://HOST:PORT/api"]
        return "\n".join(lines)


def find_server() -> ServerLookup:
    """PREFECT_API_URL if set; else the stack `runbook up` recorded; else the default address of `runbook up`."""
    tried: list[tuple[str, str]] = []
    if os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"]
        why = unreachable_reason(url)
        if why is None:
            return ServerLookup(url, "PREFECT_API_URL", tried)
        return ServerLookup(None, "PREFECT_API_URL", [(f"PREFECT_API_URL={url}", why)])
    record = recorded_stack()
    if record:
        why = unreachable_reason(record["api_url"])
        if why is None:
            return ServerLookup(record["api_url"], str(stack_file()), tried)
        tried.append((f"{record['api_url']} (recorded in {stack_file()})", why))
    else:
        tried.append((str(stack_file()), "no running `runbook up` recorded"))
    if not record or record["api_url"] != DEFAULT_API:
        why = unreachable_reason(DEFAULT_API)
        if why is None:
            return ServerLookup(DEFAULT_API, "default address", tried)
        tried.append((DEFAULT_API, why))
    return ServerLookup(None, "", tried)


def use_server(api_url: str, ui_url: str | None = None) -> None:
    """Point this process's Prefect at `api_url`, also when Prefect was imported before.

    Prefect keeps the settings it read at import in a global context; it offers
    `refresh_global_settings_context` to pick up environment changes made later.
    """
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_UI_URL", ui_url or api_url.rstrip("/").removesuffix("/api"))
    os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"  # never fall back to a temporary server of its own
    refresh_global_settings_context()
