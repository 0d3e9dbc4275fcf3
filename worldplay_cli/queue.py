"""rq, the way worldplay uses it: JSON serializer only, allowlisted tasks only, lost jobs reaped fast.

Shared by the CLI (enqueue, reap on read) and the worker (the guarded job class, the reaper). It imports
rq, redis and our schema, nothing of the UI and nothing of `worker`.

Lost-worker detection: a running job's entry in rq's started registry carries an expiry that the worker
pushes forward on every heartbeat (`worker.heartbeat_s`). If the worker dies, the entry expires
`worker.lost_after_s` after the last heartbeat; `reap()` (run every `worker.reaper_interval_s` by every
live worker, and by `worldplay jobs`) then re-queues the job if it has retries left, else fails it with
the reason "worker lost". See docs/queue-and-workers.md for the bound.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from worldplay_cli.schema import (
    ALLOWED_TASKS,
    JOBS_INDEX,
    QUEUES_SET,
    TASK_GENERATE,
    Failure,
    JobSpec,
    log_stream_key,
    summary,
)
from worldplay_cli.settings import open_job_file

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

    from worldplay_cli.settings import Settings

log = logging.getLogger("worldplay.queue")

SERIALIZER = JSONSerializer
REAPER_LOCK = "worldplay:reaper-lock"
LOST_HINT = "check the worker host (killed, out of memory, rebooted?)"


class TaskRefused(Exception):
    """A job asked the worker to run something that is not on the allowlist."""


class GuardedJob(Job):
    """An rq Job that will only ever resolve an allowlisted task, and never callbacks or webhooks.

    rq turns `func_name` (and callback names) into code with `import_attribute`, so a job written to Redis
    by anyone could name `os.system`. The check runs before any import happens.
    """

    def refusal(self) -> str | None:
        name = self.func_name
        if name not in ALLOWED_TASKS:
            return f"task {name!r} is not on the worldplay allowlist ({', '.join(sorted(ALLOWED_TASKS))})"
        if self.instance is not None:
            return "job names a method of an object; worldplay tasks are plain functions"
        if self._success_callback_name or self._failure_callback_name or self._stopped_callback_name:
            return "job carries callbacks; worldplay jobs never do"
        if self.webhooks:
            return "job carries webhooks; worldplay jobs never do"
        return None

    @property
    def func(self):
        refusal = self.refusal()
        if refusal:
            raise TaskRefused(refusal)
        return Job.func.fget(self)

    # Never resolve callback names from Redis (they are import paths too).
    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None

    def send_webhooks(self, *args, **kwargs) -> None:
        return None


def rq_queue(conn: Redis, name: str) -> Queue:
    from rq import Queue

    return Queue(name, connection=conn, serializer=SERIALIZER, job_class=GuardedJob)


def fetch_job(conn: Redis, job_id: str) -> GuardedJob | None:
    from rq.exceptions import NoSuchJobError

    try:
        return GuardedJob.fetch(job_id, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        return None


def enqueue_generate(
    conn: Redis, settings: Settings, spec: JobSpec, job_id: str, queue_name: str, retries_on_lost: int | None = None
) -> GuardedJob:
    """Put a validated spec on `queue_name` (its inputs must already be in the job directory)."""
    from rq import Retry

    retries = settings.queue.retries_on_lost_worker if retries_on_lost is None else retries_on_lost
    queue = rq_queue(conn, queue_name)
    meta = {"summary": summary(spec, queue_name), "attempt": 0}
    job = queue.enqueue(
        TASK_GENERATE,
        spec.model_dump(mode="json"),
        job_id=job_id,
        job_timeout=spec.timeout_s,
        result_ttl=settings.queue.finished_ttl_s,
        failure_ttl=settings.queue.failed_ttl_s,
        # A re-run of a job that had already started goes first: it has waited its turn once.
        retry=Retry(max=retries, enqueue_at_front=True) if retries > 0 else None,
        meta=meta,
        description=f"generate {spec.engine}/{spec.variant} {spec.frames}f: {spec.prompt[:60]}",
    )
    with conn.pipeline() as pipe:
        pipe.sadd(QUEUES_SET, queue_name)
        pipe.zadd(JOBS_INDEX, {job_id: time.time()})
        pipe.execute()
    return job


def append_log(conn: Redis, settings: Settings, job_id: str, line: str, log_file: Path | None = None) -> None:
    """One line to the job's capped Redis stream (and to its log.txt when the file is reachable).

    The stream keeps `worker.log_stream_maxlen` lines and expires with the job record."""
    stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
    key = log_stream_key(job_id)
    with conn.pipeline(transaction=False) as pipe:
        pipe.xadd(key, {"line": stamped}, maxlen=settings.worker.log_stream_maxlen, approximate=True)
        pipe.expire(key, max(settings.queue.finished_ttl_s, settings.queue.failed_ttl_s))
        pipe.execute()
    if log_file is not None and log_file.parent.is_dir():
        with os.fdopen(open_job_file(log_file, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8") as handle:
            handle.write(stamped + "\n")


def set_failure(job: Job, failure: Failure) -> None:
    job.get_meta(refresh=True)
    job.meta["failure"] = failure.model_dump()
    job.save_meta()


def known_queues(conn: Redis) -> list[str]:
    return sorted(name.decode() for name in conn.smembers(QUEUES_SET))


def reap(conn: Redis, settings: Settings, force: bool = False) -> list[dict[str, Any]]:
    """Re-queue or fail jobs whose worker stopped heartbeating; returns what it did, one dict per job.

    Takes a short lock so that many workers (and CLI reads) do not reap the same queue at once; `force`
    skips the lock (used by tests and `jobs list`).
    """
    token = str(time.time())
    if not force and not conn.set(REAPER_LOCK, token, nx=True, px=int(settings.worker.reaper_interval_s * 1000)):
        return []
    outcomes = []
    for queue_name in known_queues(conn):
        registry = StartedJobRegistry(queue_name, connection=conn, job_class=GuardedJob, serializer=SERIALIZER)
        expired = registry.get_expired_job_ids()
        if not expired:
            continue
        before = {}
        for job_id in expired:
            job = fetch_job(conn, job_id)
            if job is not None and job.get_status(refresh=False) == JobStatus.STARTED:
                before[job_id] = (job.worker_name, job.retries_left or 0)
        registry.cleanup()
        for job_id, (worker_name, retries_left) in before.items():
            outcomes.append(_record_lost(conn, settings, job_id, worker_name, retries_left))
    return outcomes


def _record_lost(conn: Redis, settings: Settings, job_id: str, worker_name: str | None, retries_left: int) -> dict:
    job = fetch_job(conn, job_id)
    status = job.get_status(refresh=False).value if job is not None else "gone"
    lost_for = settings.worker.lost_after_s
    if status == JobStatus.QUEUED:
        message = f"worker {worker_name} lost (no heartbeat for {lost_for} s); re-queued"
    else:
        message = f"worker {worker_name} lost (no heartbeat for {lost_for} s); no retries left, failed"
    if job is not None:
        job.get_meta(refresh=True)
        history = job.meta.setdefault("history", [])
        history.append({"attempt": job.meta.get("attempt", 0), "outcome": "worker_lost", "at": time.time()})
        if status == JobStatus.FAILED:
            job.meta["failure"] = Failure(kind="worker_lost", message=message, hint=LOST_HINT).model_dump()
        job.save_meta()
        append_log(conn, settings, job_id, message, job_dir(settings, job_id) / "log.txt")
        if status == JobStatus.FAILED:
            end_manifest(job_dir(settings, job_id), "failed", Failure(kind="worker_lost", message=message))
    log.warning("job %s: %s", job_id, message)
    return {"job_id": job_id, "status": status, "message": message}


def job_dir(settings: Settings, job_id: str) -> Path:
    return Path(settings.output_root) / job_id


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` (in a job directory, so with `job_file_mode`) all at once."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(open_job_file(tmp, os.O_WRONLY | os.O_TRUNC), "w") as handle:
        handle.write(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def end_manifest(directory: Path, status: str, failure: Failure | None) -> None:
    """Mark a manifest still saying 'running' as ended (used when the run itself could not say so)."""
    path = directory / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("status") != "running":
        return
    data["status"] = status
    data["failure"] = failure.model_dump() if failure else None
    timings = data.setdefault("timings", {})
    timings["finished_at"] = time.time()
    if timings.get("started_at"):
        timings["duration_s"] = round(timings["finished_at"] - timings["started_at"], 3)
    write_json_atomic(path, data)
