"""Parallel steps: tracks side by side, each a child flow run of its own so each can wait for its own people."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, tags
from prefect.context import TagsContext

from runbooks.model import ParallelStep, Track
from tasks.incident import Incident, IncidentEnded
from tasks.steps import StepFailed, Walk, runs


@runs("parallel")
def run(inc: Incident, step: ParallelStep, walk: Walk) -> dict:
    finished = {track.id: threading.Event() for track in step.tracks}
    errors: list[BaseException] = []

    def run_track(track: Track) -> None:
        try:
            for dep in track.after:
                finished[dep].wait()
            if errors:
                return
            if not inc.holds(track.when):  # checked once the tracks it waits for are done, so it may read their answers
                inc.record("track.skipped", f"condition not met: {track.when}", step=track.id)
                return
            with tags(*inc.run_tags):  # the track's run carries the incident's tags, as the incident's own run does
                track_flow(inc, step, track, walk)()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the parent below)
            errors.append(exc)
        finally:
            finished[track.id].set()

    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=len(step.tracks), thread_name_prefix=step.id) as pool:
        futures = [pool.submit(context.copy().run, run_track, track) for track in step.tracks]
        for future in futures:
            future.result()
    ended = next((e for e in errors if isinstance(e, IncidentEnded)), None)
    if ended:
        raise ended
    if errors:
        raise StepFailed(f"track failed: {errors[0]}")
    skipped = {e.step for e in inc.journal if e.kind == "track.skipped"}
    return {"tracks": [t.id for t in step.tracks if t.id not in skipped]}


def track_flow(inc: Incident, step: ParallelStep, track: Track, walk: Walk):
    def run_track() -> None:
        # its task runs carry no tags: Prefect asks the server for a concurrency slot for every tag of a task run
        with TagsContext(current_tags=set()):
            inc.record("track.started", track.title.both(), step=track.id)
            walk(inc, track.steps)
            inc.record("track.done", "", step=track.id)

    run_track.__name__ = run_track.__qualname__ = track.id.replace("-", "_")
    return flow(run_track, name=f"{inc.runbook.id}.{track.id}", flow_run_name=f"{inc.runbook.id} · {track.id}",
                validate_parameters=False)
