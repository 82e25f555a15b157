"""Imported by the warm forkserver (app/warm.py): does once what every incident does when it starts.

Each forked run inherits the parsed contacts and site and the built runbook flows (a file
changed since is read again by the run, runbooks/yamlfile.py, so nothing goes stale),
Prefect's once-per-process check that the server speaks its API version, the TLS context every
client of the project shares (tasks/client.py), the Prefect collections a run's first block load
would import, the block that keeps the steps' done records, the modules a run's first task imports,
Prefect's client models built, and the report's templates compiled.
"""

import gc
import logging
import sys
import threading

from prefect.settings import PREFECT_API_URL

from integrations.contacts import load_directory
from integrations.site import load_site
from runbooks.settings import get_settings
from tasks.client import share_tls_with_prefect_clients, shared_tls_context, sync_client


def _build_models() -> None:
    """Build now every Prefect model imported so far whose build pydantic left for its first use."""
    from pydantic import BaseModel

    for module in [m for name, m in list(sys.modules.items()) if name.startswith("prefect.")]:
        for obj in list(vars(module).values()):
            if (isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__
                    and not obj.__pydantic_complete__):
                try:
                    obj.model_rebuild()
                except Exception:  # noqa: BLE001  (built at its first use, as before)
                    pass


try:
    share_tls_with_prefect_clients()  # the runs' Prefect clients too: one TLS context, built here before any fork
    shared_tls_context()
except Exception as exc:  # noqa: BLE001  (each client builds its own, as Prefect does)
    logging.getLogger("runbook.warm").warning("the warm parent could not build the TLS context ahead (%s)", exc)

# Python's forkserver survives only an ImportError while it preloads: anything else here (a broken contacts file)
# would end it, and every run after it. Each run reads what failed again and fails with its own error instead.
try:
    from flows.catalog import FLOWS  # noqa: F401  (every runbook's flow, built)

    _settings = get_settings()
    load_directory(_settings.contacts_file)
    load_site(_settings.site_file)
except Exception as exc:  # noqa: BLE001
    logging.getLogger("runbook.warm").warning("the warm parent could not read everything ahead (%s); runs read it", exc)

if PREFECT_API_URL.value():
    try:
        with sync_client() as client:  # closed again: no connection is inherited by the forks
            client.raise_for_api_version_mismatch_once()
        # Prefect keeps the check per (URL, version): the HTTP client's URL ends in "/", the events clients' (the
        # heartbeats, the suspension observer) is the setting as written, so each would check once more per run
        from prefect._internal.version_checking import _api_version_check_key, _cache_api_version_check

        _cache_api_version_check(_api_version_check_key(PREFECT_API_URL.value(), client.client_version()))
    except Exception:  # noqa: BLE001  (each run checks for itself then, as Prefect does)
        pass

try:
    # The first block a run loads (the steps' done records, tasks/records.py) makes Prefect import every
    # collection (this project's runbook worker, prefect.workers): 0.9 s each run would spend before its first
    # step. Imported here; the block itself is loaded by each run (one request): loading it emits an event, and
    # Prefect's events worker would start threads in the forkserver, which must fork from a single thread.
    from prefect._internal.plugins.collections import load_prefect_collections

    load_prefect_collections()
except Exception as exc:  # noqa: BLE001
    logging.getLogger("runbook.warm").warning("the warm parent could not import Prefect's collections (%s)", exc)

if PREFECT_API_URL.value():
    try:
        # The block that keeps the steps' done records (tasks/records.py), read here once rather than by each run
        # on its first acting step's way (one request, 50-90 ms on a busy server: bench trace). Loading a block
        # emits an event, and Prefect's events worker would start threads here (see above): this load emits none.
        import prefect.blocks.core as _blocks

        from tasks.records import load_step_records

        _emit, _blocks.emit_event = _blocks.emit_event, lambda *args, **kwargs: None
        try:
            load_step_records()
        finally:
            _blocks.emit_event = _emit
    except Exception as exc:  # noqa: BLE001  (each run loads it, as before)
        logging.getLogger("runbook.warm").warning("the warm parent could not load the step records' block (%s)", exc)

try:
    # Done by every run otherwise, on its first step's way or at its close (traced with py-spy on bench trace's
    # runs): a task's first call imports the task engine and Prefect's task visualizer, graphviz with it
    # (prefect/tasks.py Task.__call__), ~0.1 s; Prefect's client models are built at their first use (pydantic
    # builds them late), ~30 ms; the report's templates were compiled as the incident closed.
    import prefect.task_engine  # noqa: F401
    import prefect.utilities.visualization  # noqa: F401

    from flows.record.report import load_templates

    _build_models()
    load_templates()
except Exception as exc:  # noqa: BLE001
    logging.getLogger("runbook.warm").warning("the warm parent could not prepare the runs' first step (%s)", exc)

try:
    from app.warm import forkserver_settings

    forkserver_settings()  # once here, not in every run
except Exception as exc:  # noqa: BLE001  (each run reads them itself)
    logging.getLogger("runbook.warm").warning("the warm parent could not read its settings ahead (%s)", exc)

if threading.active_count() > 1:  # something above started a thread: a fork would copy its locks as they are
    logging.getLogger("runbook.warm").warning("the warm parent runs %d threads; forks may inherit a held lock",
                                              threading.active_count())
# What the forkserver has built stays out of the collector's sight from here: a forked run's collections would
# otherwise touch (and so copy) the parent's pages, and each run's memory grow towards its RSS while it waits.
gc.freeze()
