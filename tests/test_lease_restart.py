"""A running incident keeps its runbook's concurrency slot across a restart of the Prefect server.

A run of a deployment with a concurrency limit holds a lease on a slot, which its process renews every few minutes;
a refused renewal makes Prefect cancel the run. `runbook up` keeps leases on disk (flows/server.py SERVER_SETTINGS),
so the restarted server still knows them: with Prefect's default (memory) this renewal is answered 410 Gone.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Pending

from tests.alerts.procs import PrefectServer


def test_a_slot_lease_outlives_a_server_restart(tmp_path):
    server = PrefectServer(tmp_path / "prefect").start(timeout=180)
    try:
        with temporary_settings({PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name("lease-test")
            deployment_id = client.create_deployment(flow_id, "limited", concurrency_limit=1)
            run = client.create_flow_run_from_deployment(deployment_id)
            assert client.set_flow_run_state(run.id, Pending()).status.value == "ACCEPT"
            lease = client.read_flow_run(run.id).state.state_details.deployment_concurrency_lease_id
            assert lease, "the Pending run took no slot lease"

            server.stop()
            server.start(timeout=180)

            client.renew_concurrency_lease(lease, lease_duration=300)  # raises on 410 Gone: the lease was lost
    finally:
        server.stop()
