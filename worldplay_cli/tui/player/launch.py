"""Starting a live session for the player, and cleaning up after it.

On a queue (`--queue`): the session is refused at once when no live worker serves the queue (a session
nobody plays would only wait for its idle timeout), else submitted there. Without: a private queue and a
one-job worker of our own, exactly as foreground `worldplay generate` runs (`worldplay_cli.follow`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.tui.player.client import PlayClient, WorkerLost

if TYPE_CHECKING:
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import PlayRequest

# A private worker that finished its one session exits by itself; this long is it given before SIGTERM.
WORKER_EXIT_S = 15.0


@dataclass
class Session:
    """A submitted session, its player-side client and (without --queue) its private worker."""

    runtime: Runtime
    client: PlayClient
    queue: str
    worker: subprocess.Popen | None = None

    @property
    def job_id(self) -> str:
        return self.client.job_id

    def close(self) -> None:
        """After the player: a session that never started is canceled; a private worker is stopped."""
        from worldplay_cli import jobs
        from worldplay_cli.follow import forget_queue, stop_worker

        client = self.client
        if client.ready is None and client.outcome is None:
            jobs.cancel_job(self.runtime.conn, self.runtime.settings, self.job_id)
        elif client.outcome is None and not client.ending:
            # left without q (e.g. ctrl+q): end the session now rather than after the worker's idle timeout
            client.end()
            client.flush(0.01)
        if self.worker is not None:
            try:
                self.worker.wait(timeout=WORKER_EXIT_S if client.ending else 0.1)
            except subprocess.TimeoutExpired:
                pass
            stop_worker(self.worker)
            forget_queue(self.runtime.conn, self.queue)


def start_session(runtime: Runtime, request: PlayRequest, queue: str | None) -> Session:
    """Submit the session (`queue` None: on a private queue with a worker of our own) and make its client."""
    from worldplay_cli.contract.play import PlayChannel, PlaySpec
    from worldplay_cli.contract.queue import job_dir
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.follow import own_paths_allowed
    from worldplay_cli.rows import unserved_queue_warning
    from worldplay_cli.submit import submit_play

    settings, conn = runtime.settings, runtime.conn
    if queue is not None:
        if unserved_queue_warning(conn, settings, queue) is not None:
            raise WorldplayError(
                f"no live worker serves queue '{queue}', so nobody would play this session",
                f"start one where the GPU is, with this Redis: worldplay worker --queue {queue}",
            )
        submitted = submit_play(request, settings, conn, queue, check_served=False)
    else:
        job_id = new_job_id(request.name or "play")
        submitted = submit_play(request, settings, conn, f"local-{job_id}", job_id=job_id, check_served=False)
    directory = job_dir(settings, submitted.job_id)
    spec = PlaySpec.model_validate(json.loads((Path(directory) / "spec.json").read_text()))
    worker = None
    if queue is None:
        worker = runtime.spawn_worker(
            submitted.queue, burst=True, max_jobs=1, quiet=True, env_extra=own_paths_allowed(settings, spec)
        )
    client = PlayClient(
        PlayChannel(conn, submitted.job_id),
        ahead_chunks=spec.ahead_chunks,
        max_chunks=spec.max_chunks,
        output_dir=str(directory),
        prompt=spec.prompt,
        job_check=lambda: _job_ended(runtime, submitted.job_id, worker),
    )
    return Session(runtime, client, submitted.queue, worker)


def _job_ended(runtime: Runtime, job_id: str, worker: subprocess.Popen | None) -> WorkerLost | None:
    """Why the session can no longer answer, from its job and its private worker; None while it can."""
    from worldplay_cli import jobs

    row = jobs.get_row(runtime.conn, job_id)
    if row.status in jobs.ENDED:
        failure = row.failure or {}
        return WorkerLost(f"the session's job {row.status}: {failure.get('message', 'no reason given')}",
                          failure.get("hint") or f"worldplay jobs logs {job_id}")  # fmt: skip
    if worker is not None and worker.poll() is not None:
        return WorkerLost(f"the private worker exited ({worker.returncode})", f"worldplay jobs logs {job_id}")
    return None
