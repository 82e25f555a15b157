"""A Prefect client without a new TLS set-up each time.

Prefect builds a TLS context for every client it makes, loading the whole CA bundle: about 50 ms of CPU on this
machine, even for a server on http://. The project opens a short-lived client in many places (a claim, a record
read, each tier the watcher pages on its lanes), and that load was most of the watcher's time per tier. Here the
context is made once per process, as Prefect would make it (PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
PREFECT_API_SSL_CERT_FILE, else certifi's bundle), and handed to each client. Inside a flow or task run Prefect's own
client of the run is returned, as `get_client` does.
"""

from __future__ import annotations

import ssl
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Iterator

import certifi

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import SyncClientContext
from prefect.settings import get_current_settings


_kept: ContextVar[SyncPrefectClient | None] = ContextVar("runbook-kept-client", default=None)


@lru_cache(maxsize=4)
def _tls(skip_verify: bool, cert_file: str | None) -> ssl.SSLContext:
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cert_file or certifi.where())


def sync_client() -> SyncPrefectClient:
    """`get_client(sync_client=True)`, use it the same way (`with sync_client() as client:`)."""
    kept = _kept.get()
    if kept is not None:
        return kept  # entered already: a `with` on it nests, and does not close it
    context = SyncClientContext.get()
    if context is not None and context.client is not None:
        return get_client(sync_client=True)  # the run's own client
    api = get_current_settings().api
    return get_client(sync_client=True, httpx_settings={"verify": _tls(bool(api.tls_insecure_skip_verify), api.ssl_cert_file)})


@contextmanager
def keeping(client: SyncPrefectClient) -> Iterator[SyncPrefectClient]:
    """Within, `sync_client()` gives this open client rather than a new one: for a thread that keeps a client for its
    life (the watcher's lanes), so a claim or a record read there costs no new connection (nor its CSRF token fetch)."""
    token = _kept.set(client)
    try:
        yield client
    finally:
        _kept.reset(token)
