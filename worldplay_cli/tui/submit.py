"""Enqueue a generation job from a terminal app, through the same path as `worldplay generate --queue`.

Shared by the dashboard's submit form and the trajectory editor's submit dialog. Blocking (Redis, files):
call it from a Textual thread worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.submit import PreparedJob


@dataclass(frozen=True)
class Submitted:
    job_id: str
    queue: str
    # No live worker serves the queue: the one-line warning with the command that starts one.
    warning: str | None = None


def enqueue_prepared(conn: Redis, settings: Settings, prepared: PreparedJob, queue: str | None = None) -> Submitted:
    """Write the inputs of a `prepare`d job and enqueue it on `queue` (default: the settings' queue)."""
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.submit import check_output_root, submit

    check_output_root(settings)
    queue_name = queue or settings.queue.default_queue
    job_id = new_job_id()
    submit(conn, settings, prepared, queue_name, job_id)
    return Submitted(job_id, queue_name, queue_warning(conn, settings, queue_name))


def queue_warning(conn: Redis, settings: Settings, queue: str) -> str | None:
    """`unserved_queue_warning`, except that a Redis error here gives no warning: the job is already
    enqueued, and a hint that cannot be computed must not turn that into a failure."""
    import redis

    from worldplay_cli.jobs import unserved_queue_warning

    try:
        return unserved_queue_warning(conn, settings, queue)
    except redis.RedisError:
        return None
