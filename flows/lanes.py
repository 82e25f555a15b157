"""The escalation watcher's lanes: threads, each with a Prefect client of its own, that look after the suspended runs
with something due side by side (flows/escalation.py wake_due): each due tier is a few server calls and a page, so one
after the other, 250 incidents whose tiers come due together would be paged over a minute."""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

from tasks.client import keeping, sync_client

log = logging.getLogger("runbook.escalation")
LANES = 8  # suspended runs with something due looked after side by side


def side_by_side(runs: list[FlowRun], lanes: int, work) -> list:
    """`work(client, run)` for every run, dealt round the lanes: a thread each, with a Prefect client of its own."""

    def lane(share: list[FlowRun]) -> list:
        with sync_client() as own, keeping(own):
            return [work(own, run) for run in share]

    shares = [runs[i::lanes] for i in range(min(lanes, len(runs)))]
    with ThreadPoolExecutor(len(shares), thread_name_prefix="watcher-lane") as pool:
        # each lane in a copy of this context: the caller's Prefect settings (e.g. a temporary API URL) hold there too
        futures = [pool.submit(contextvars.copy_context().run, lane, share) for share in shares]
        return [result for future in futures for result in future.result()]


class Lanes:
    """Threads that outlive a pass, each with a Prefect client of its own, looking after the runs handed to them.

    With lanes that end with their pass, a pass that found 250 tiers due takes its 10 s, and a tier that came due
    just after it began waits for its end and then for its turn in the next: twice a pass late. Here a pass only
    hands over what has come due, and a run still being looked after is not handed over again.
    """

    def __init__(self, size: int = LANES, name: str = "watcher-lane"):
        self._size = size
        self._pool = ThreadPoolExecutor(size, thread_name_prefix=name)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._busy: set[UUID] = set()
        self._done: list = []

    def submit(self, run: FlowRun, work) -> bool:
        """`work(client, run)` on a lane, unless that run is already in hand; False then."""
        with self._lock:
            if run.id in self._busy:
                return False
            self._busy.add(run.id)
        self._pool.submit(contextvars.copy_context().run, self._run, run, work)
        return True

    def _run(self, run: FlowRun, work) -> None:
        try:
            with keeping(self._client()) as client:
                result = work(client, run)
        except Exception:  # one run's failure (Prefect restarting) is tried again by a later pass
            log.exception("looking after %s failed", run.name)
            result = None
        with self._lock:
            self._busy.discard(run.id)
            self._done.append(result)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:  # kept for the thread's life: httpx connects again after a server restart
            client = self._local.client = sync_client().__enter__()
        return client

    def finished(self) -> list:
        """The results finished since the last call."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def backlog(self) -> int:
        """Runs handed over beyond what the lanes are working on: while there are any, a pass would only add load."""
        return self.in_hand() - self._size

    def in_hand(self) -> int:
        with self._lock:
            return len(self._busy)
