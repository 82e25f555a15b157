"""Entry points: the web app (alert intake and answer webhooks), the intake drainer, the embedded stack."""
