"""run_intake: what the CLI calls."""

from __future__ import annotations


def test_run_intake_serves_the_app_on_the_given_address(monkeypatch):
    import uvicorn

    from app import server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    server.run_intake("0.0.0.0", 9999)
    ((app, kw),) = calls
    assert kw["host"] == "0.0.0.0" and kw["port"] == 9999 and kw["workers"] == 1
    assert {"/alerts/alertmanager", "/alerts/grafana", "/alerts/generic", "/alerts/pagerduty", "/v2/enqueue", "/healthz"} <= set(app.openapi()["paths"])
