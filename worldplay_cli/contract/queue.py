"""rq, the way worldplay uses it: JSON serializer only, allowlisted tasks only, lost jobs reaped fast.

Shared by the CLI (enqueue, reap on read) and the worker (the guarded job class, the reaper). It imports
rq, redis and our schema, nothing of the UI and nothing of `worker`.

Lost-worker detection: a running job's entry in rq's started registry carries an expiry that the worker
pushes forward on every heartbeat (`worker.heartbeat_s`). If the worker dies, the entry expires
`worker.lost_after_s` after the last heartbeat; `reap()` (run every `worker.reaper_interval_s` by every
live worker, and by `worldplay jobs`) then re-queues the job if it has retries left, else fails it with
the reason "worker lost", and revokes the lost run's claim. It also puts back jobs a worker took off a
queue but never started. See docs/queue-and-workers.md for the bounds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from redis.exceptions import WatchError
from rq.exceptions import StopRequested
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.settings import open_job_file
from worldplay_cli.contract.specs import (
    ALLOWED_TASKS,
    JOBS_INDEX,
    QUEUES_SET,
    Failure,
    log_stream_key,
    run_key,
)

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.settings import Settings

log = logging.getLogger("worldplay.queue")

SERIALIZER = JSONSerializer
REAPER_LOCK = "worldplay:reaper-lock"
# Queue entries a worker could not turn into a job (newest last, capped): see `GuardedQueue`.
SET_ASIDE_KEY = "worldplay:set-aside"
SET_ASIDE_MAX = 1000
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


class GuardedQueue(Queue):
    """A queue whose dequeue survives a malformed entry (an id that is no rq job id, like `../../etc`
    pushed by hand, or a job hash that does not decode): rq would raise out of the worker loop, and the
    worker would quit. The entry is logged and set aside instead, and the worker takes the next one.

    Every job it enqueues (deferred ones too) goes into the jobs index, scored by its creation time."""

    def enqueue_job(self, job: Job, pipeline=None, at_front: bool = False, unique: bool = False) -> Job:
        job = super().enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        (pipeline if pipeline is not None else self.connection).zadd(JOBS_INDEX, {job.id: created_score(job)})
        return job

    @classmethod
    def _fetch_dequeued_job(cls, connection, queue_key, job_id, *args, **kwargs):
        try:
            fetched = super()._fetch_dequeued_job(connection, queue_key, job_id, *args, **kwargs)
        except StopRequested:  # the worker's SIGTERM landed here: the entry is fine, the worker stops
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the entry holds, it must not stop the worker
            set_aside(connection, queue_key, job_id, exc)
            return None
        if fetched is not None and fetched[0].get_status(refresh=False) != JobStatus.QUEUED:
            # A stale entry: a job re-queued as lost whose first run then finished after all. Running it
            # again would only fail (its video exists) and overwrite the finished record.
            connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, job_id)
            log.warning(
                "queue %s: job %s is %s, not queued; entry dropped",
                queue_key,
                job_id,
                fetched[0].get_status(refresh=False),
            )
            return None
        return fetched


def set_aside(conn: Redis, queue_key: str, entry: str, exc: BaseException) -> None:
    """Take a malformed entry off the worker's intermediate list and keep it, with the reason, for a human."""
    record = {"queue_key": queue_key, "entry": entry, "error": f"{type(exc).__name__}: {exc}", "at": time.time()}
    with conn.pipeline() as pipe:
        pipe.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, entry)
        pipe.rpush(SET_ASIDE_KEY, json.dumps(record))
        pipe.ltrim(SET_ASIDE_KEY, -SET_ASIDE_MAX, -1)
        pipe.execute()
    log.error("queue %s: malformed entry %r set aside in %s (%s)", queue_key, entry, SET_ASIDE_KEY, record["error"])


def created_score(job: Job) -> float:
    """The jobs index's score of a job: rq's creation time in seconds since the epoch, computed as a
    listing computes it from the stored text (`rows.rq_timestamp`), so both order jobs alike."""
    return job.created_at.replace(tzinfo=timezone.utc).timestamp()


def rq_queue(conn: Redis, name: str) -> Queue:
    return GuardedQueue(name, connection=conn, serializer=SERIALIZER, job_class=GuardedJob)


def fetch_job(conn: Redis, job_id: str) -> GuardedJob | None:
    from rq.exceptions import NoSuchJobError

    try:
        return GuardedJob.fetch(job_id, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        return None


class QueuedSpec(Protocol):
    """What `enqueue` needs of a job spec of any kind (`specs.JobSpec`, `training.TrainJobSpec`)."""

    task: ClassVar[str]  # the allowlisted rq task that runs it
    rerun_first: ClassVar[bool]  # a re-run after a lost worker goes to the front of its queue
    timeout_s: int

    def summary(self, queue: str) -> dict: ...
    def description(self) -> str: ...
    def model_dump(self, *, mode: str) -> dict: ...


def enqueue(
    conn: Redis,
    settings: Settings,
    spec: QueuedSpec,
    job_id: str,
    queue_name: str,
    retries_on_lost: int | None = None,
    depends_on: list[str] | None = None,
    batch: str | None = None,
) -> GuardedJob:
    """Put a validated job of any kind on `queue_name` (rq, JSON serializer, its allowlisted `spec.task`),
    listed with every other job: a generation (its inputs already in the job directory) or a training run.

    `depends_on`: job ids that must finish first (rq keeps the job deferred until then; a parent that fails,
    is canceled or is lost fails this job too, see `fail_orphans`). `batch`: the id of the batch it belongs
    to, kept in its summary (`jobs list --batch`)."""
    from rq import Retry

    retries = settings.queue.retries_on_lost_worker if retries_on_lost is None else retries_on_lost
    summary = spec.summary(queue_name)
    if batch is not None:
        summary["batch"] = batch
    if depends_on:
        summary["depends_on"] = list(depends_on)
    job = rq_queue(conn, queue_name).enqueue(
        spec.task,
        spec.model_dump(mode="json"),
        job_id=job_id,
        job_timeout=spec.timeout_s,
        result_ttl=settings.queue.finished_ttl_s,
        failure_ttl=settings.queue.failed_ttl_s,
        retry=Retry(max=retries, enqueue_at_front=spec.rerun_first) if retries > 0 else None,
        meta=JobMeta.queued(summary),
        description=spec.description(),
        depends_on=list(depends_on) if depends_on else None,
    )
    with conn.pipeline() as pipe:
        pipe.sadd(QUEUES_SET, queue_name)
        if batch is not None:
            pipe.zadd(batch_key(batch), {job_id: time.time()})
        pipe.execute()
    return job


BATCH_PREFIX = "worldplay:batch:"


def batch_key(batch: str) -> str:
    """Sorted set: the job ids of one batch -> enqueue time (`jobs list/cancel/retry --batch`)."""
    return BATCH_PREFIX + batch


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
    JobMeta.set_failure(job.meta, failure)
    job.save_meta()


def known_queues(conn: Redis) -> list[str]:
    return sorted(name.decode() for name in conn.smembers(QUEUES_SET))


def note_attempt(job: Job, failure: Failure) -> None:
    """Add the attempt that just ended to `job.meta["history"]` (in memory: the caller saves the meta, in
    the same write as the status change where it can, so a re-run never starts from a meta without it)."""
    JobMeta.note_attempt(job.meta, failure)


def reap(conn: Redis, settings: Settings, force: bool = False) -> list[dict[str, Any]]:
    """Re-queue or fail jobs whose worker stopped heartbeating, and re-queue jobs a dead worker took off a
    queue without starting them; returns what it did, one dict per job.

    Takes a short lock so that many workers (and CLI reads) do not reap the same queue at once; `force`
    skips the lock (used by tests and `jobs list`). Each job is handled in one transaction watched on its
    hash, so two reapers never re-queue the same job twice.
    """
    token = str(time.time())
    if not force and not conn.set(REAPER_LOCK, token, nx=True, px=int(settings.worker.reaper_interval_s * 1000)):
        return []
    outcomes = []
    # Nobody could heartbeat while Redis was down: right after a restart every running job looks lost.
    # Give the workers one full `lost_after_s` of a live Redis to show they are still there.
    just_restarted = (
        conn.info("server")["uptime_in_seconds"] < settings.worker.lost_after_s + settings.worker.heartbeat_s
    )
    for queue_name in known_queues(conn):
        queue = rq_queue(conn, queue_name)
        registry = StartedJobRegistry(queue_name, connection=conn, job_class=GuardedJob, serializer=SERIALIZER)
        cutoff = time.time()
        expired: dict[str, list[bytes]] = {}
        for member in conn.zrangebyscore(registry.key, 0, cutoff):
            expired.setdefault(registry.parse_job_id(member.decode()), []).append(member)
        # A job re-run elsewhere can still have its dead run's entry: only the live one counts.
        live = {
            registry.parse_job_id(member.decode()) for member in conn.zrangebyscore(registry.key, f"({cutoff}", "+inf")
        }
        for job_id, members in {} if just_restarted else expired.items():
            outcome = _reap_lost(conn, settings, queue, registry.key, job_id, members, running=job_id in live)
            if outcome:
                outcomes.append(outcome)
        outcomes += _reap_untaken(conn, settings, queue, expired.keys() | live)
    outcomes += fail_orphans(conn, settings)
    return outcomes


# A parent in one of these states will not finish (a failed job that is retried is queued again, not failed).
_PARENT_ENDED = (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED)


def fail_orphans(conn: Redis, settings: Settings) -> list[dict[str, Any]]:
    """Fail every deferred job one of whose parents failed, was canceled, stopped or is gone: rq would keep
    it deferred for ever. Its failure (`parent_failed`) names the parent and the parent's reason; a chain
    fails link by link in the same call."""
    outcomes: list[dict[str, Any]] = []
    changed = True
    while changed:
        changed = False
        for queue_name in known_queues(conn):
            registry = DeferredJobRegistry(queue_name, connection=conn, job_class=GuardedJob, serializer=SERIALIZER)
            for member in conn.zrange(registry.key, 0, -1):
                outcome = _fail_orphan(conn, settings, registry.key, member.decode())
                if outcome:
                    outcomes.append(outcome)
                    changed = True
    return outcomes


def _fail_orphan(conn: Redis, settings: Settings, registry_key: str, job_id: str) -> dict | None:
    job = fetch_job(conn, job_id)
    if job is None:
        conn.zrem(registry_key, job_id)
        return None
    failure = None
    for parent_id in job.dependency_ids:
        parent = fetch_job(conn, parent_id)
        status = None if parent is None else parent.get_status(refresh=False)
        if parent is not None and status not in _PARENT_ENDED:
            continue
        reason = "is gone" if parent is None else str(status.value if hasattr(status, "value") else status)
        parent_failure = None if parent is None else JobMeta.read(parent.meta).failure
        message = f"parent job {parent_id} {reason}" + (f": {parent_failure.message}" if parent_failure else "")
        failure = Failure(
            kind="parent_failed",
            message=message,
            hint=f"see `worldplay jobs show {parent_id}`; retry it, then this job (`worldplay jobs retry {job_id}`)",
        )
        break
    if failure is None:
        return None
    with conn.pipeline() as pipe:
        try:
            pipe.watch(job.key)
            if job.get_status(refresh=True) != JobStatus.DEFERRED:
                return None
            JobMeta.set_failure(job.meta, failure)
            pipe.multi()
            pipe.zrem(registry_key, job_id)
            pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
            record_job_failure(job, f"DependencyFailed: {failure.message}", pipe)
            pipe.execute()
        except WatchError:
            return None
    append_log(conn, settings, job_id, f"failed: {failure.message}", job_dir(settings, job_id) / "log.txt")
    end_manifest(job_dir(settings, job_id), "failed", failure)
    log.warning("job %s: %s", job_id, failure.message)
    return {"job_id": job_id, "status": "failed", "message": failure.message}


def _reap_lost(
    conn: Redis, settings: Settings, queue: Queue, registry_key: str, job_id: str, members: list, running: bool
) -> dict | None:
    lost_for = settings.worker.lost_after_s
    with conn.pipeline() as pipe:
        try:
            pipe.watch(Job.key_for(job_id))
            job = fetch_job(conn, job_id)
            if running or job is None or job.get_status(refresh=False) != JobStatus.STARTED:
                pipe.multi()
                pipe.zrem(registry_key, *members)
                pipe.execute()
                return None
            retry = job.should_retry
            outcome = "re-queued" if retry else "no retries left, failed"
            message = f"worker {job.worker_name} lost (no heartbeat for {lost_for} s); {outcome}"
            failure = Failure(kind="worker_lost", message=message, hint=LOST_HINT)
            note_attempt(job, failure)
            pipe.multi()
            pipe.zrem(registry_key, *members)
            # Revoke the lost run's claim: should it wake up, it can neither write the job's meta nor
            # commit a video (see worker.runner).
            pipe.delete(run_key(job_id))
            if retry:
                job.retry(queue, pipe)  # saves the job hash, meta included
            else:
                JobMeta.set_failure(job.meta, failure)
                pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
                record_job_failure(job, f"AbandonedJobError: {message}", pipe)
            pipe.execute()
        except WatchError:
            return None  # the job changed meanwhile (another reaper, a late write): the next round looks again
    append_log(conn, settings, job_id, message, job_dir(settings, job_id) / "log.txt")
    if not retry:
        end_manifest(job_dir(settings, job_id), "failed", failure)
    log.warning("job %s: %s", job_id, message)
    return {"job_id": job_id, "status": "queued" if retry else "failed", "message": message}


def _reap_untaken(conn: Redis, settings: Settings, queue: Queue, started: set[str]) -> list[dict]:
    """A worker moves a job from its queue to the queue's intermediate list (BLMOVE) and only then starts
    it. A worker that dies in between (or whose Redis restarted and lost the reply) leaves the job there;
    rq's own cleanup takes ~2 min, and fails a job without retries left although it never ran. Put it
    back at the front once it has waited `lost_after_s`, without using up a retry."""
    intermediate = IntermediateQueue(queue.key, conn)
    outcomes = []
    for job_id in intermediate.get_job_ids():
        if job_id in started:
            continue
        intermediate.set_first_seen(job_id)
        first_seen = intermediate.get_first_seen(job_id)
        if first_seen is None or time.time() - first_seen.timestamp() < settings.worker.lost_after_s:
            continue
        with conn.pipeline() as pipe:
            try:
                pipe.watch(Job.key_for(job_id), intermediate.key)
                try:
                    job = fetch_job(conn, job_id)
                except Exception as exc:  # noqa: BLE001 - a malformed entry its worker died before setting aside
                    set_aside(conn, queue.key, job_id, exc)
                    continue
                pipe.multi()
                pipe.lrem(intermediate.key, 1, job_id)
                pipe.delete(intermediate.get_first_seen_key(job_id))
                taken_back = job is not None and job.get_status(refresh=False) == JobStatus.QUEUED
                if taken_back:
                    pipe.lpush(queue.key, job_id)
                pipe.execute()
            except WatchError:
                continue
        if taken_back:
            message = "a worker took the job but never started it (worker or Redis died); re-queued at the front"
            append_log(conn, settings, job_id, message, job_dir(settings, job_id) / "log.txt")
            log.warning("job %s: %s", job_id, message)
            outcomes.append({"job_id": job_id, "status": "queued", "message": message})
    return outcomes


def job_dir(settings: Settings, job_id: str) -> Path:
    return Path(settings.output_root) / job_id


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` (in a job directory, so with `job_file_mode`) all at once."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """`write_json_atomic` of text already made (a pydantic model's `model_dump_json`, many times faster)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(open_job_file(tmp, os.O_WRONLY | os.O_TRUNC), "w") as handle:
        handle.write(text)
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
