"""A Prefect client without a new TLS set-up each time.

Prefect builds a TLS context for every client it makes, loading the whole CA bundle: about 50 ms of CPU on this
machine, even for a server on http://. The project opens a short-lived client in many places (a claim, a record
read, each tier the watcher pages on its lanes), and that load was most of the watcher's time per tier. Here the
context is made once per process, as Prefect would make it (PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
PREFECT_API_SSL_CERT_FILE, else certifi's bundle), and handed to each client. Inside a flow or task run Prefect's own
client of the run is returned, as `get_client` does.

`share_tls_with_prefect_clients()` hands the same context to the clients Prefect makes for itself in a warm
process (the forkserver and the runs forked from it, the served runner, the runbook worker): a run's engine, its
events worker and its task runs each made one, three loads (35-90 ms each, bench trace) at every start and resume,
one of them before the run's first request to the server.
"""

from __future__ import annotations

import functools
import os
import ssl
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Iterator

import certifi

from prefect.client.orchestration import PrefectClient, SyncPrefectClient, get_client
from prefect.context import SyncClientContext
from prefect.settings import get_current_settings


_kept: ContextVar[SyncPrefectClient | None] = ContextVar("runbook-kept-client", default=None)


@lru_cache(maxsize=4)
def _tls(skip_verify: bool, cert_file: str, changed: float | None) -> ssl.SSLContext:
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cert_file)


def shared_tls_context() -> ssl.SSLContext:
    """The context for the settings of the moment (a run's own, in a run), built again when its CA file changes
    (a long-lived runner or worker picks a renewed bundle up, as Prefect's new context per client did)."""
    api = get_current_settings().api
    skip = bool(api.tls_insecure_skip_verify)
    cert_file = "" if skip else (api.ssl_cert_file or certifi.where())
    try:
        changed = os.stat(cert_file).st_mtime if cert_file else None
    except OSError:
        changed = None  # ssl says what is wrong with it when it loads it
    return _tls(skip, cert_file, changed)


def share_tls_with_prefect_clients() -> None:
    """From now on in this process, a Prefect client made without its own `verify` gets the shared context: the
    one Prefect would build for it (same settings), built once. A caller's `verify` is left as it is."""
    for cls in (PrefectClient, SyncPrefectClient):
        init = cls.__init__
        if getattr(init, "shares_tls", False):
            continue

        @functools.wraps(init)
        def __init__(self, *args, __init=init, httpx_settings: dict | None = None, **kwargs) -> None:
            if not httpx_settings or "verify" not in httpx_settings:
                httpx_settings = {**(httpx_settings or {}), "verify": shared_tls_context()}
            __init(self, *args, httpx_settings=httpx_settings, **kwargs)

        __init__.shares_tls = True
        cls.__init__ = __init__


def sync_client() -> SyncPrefectClient:
    """`get_client(sync_client=True)`, use it the same way (`with sync_client() as client:`)."""
    kept = _kept.get()
    if kept is not None:
        return kept  # entered already: a `with` on it nests, and does not close it
    context = SyncClientContext.get()
    if context is not None and context.client is not None:
        return get_client(sync_client=True)  # the run's own client
    return get_client(sync_client=True, httpx_settings={"verify": shared_tls_context()})


@contextmanager
def keeping(client: SyncPrefectClient) -> Iterator[SyncPrefectClient]:
    """Within, `sync_client()` gives this open client rather than a new one: for a thread that keeps a client for its
    life (the watcher's lanes), so a claim or a record read there costs no new connection (nor its CSRF token fetch)."""
    token = _kept.set(client)
    try:
        yield client
    finally:
        _kept.reset(token)
