"""What listings show: a job as a `JobRow` read from its rq hash (status among `STATUSES`, spec summary,
progress, failure, times, worker) and a worker as a `WorkerRow` (queues, GPUs, heartbeat age).
`worldplay_cli.jobs` (reads and writes users make), `worldplay_cli.jobs_index` (the incremental listing)
and `worldplay_cli.submit` (the unserved-queue warning) all build on these rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from worldplay_cli.contract.meta import JobMeta

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.settings import Settings

STATUSES = ("queued", "deferred", "scheduled", "started", "finished", "failed", "stopped", "canceled")
ACTIVE = frozenset({"queued", "deferred", "scheduled", "started"})
ENDED = frozenset({"finished", "failed", "stopped", "canceled"})
JOB_PREFIX = "rq:job:"
_ROW_FIELDS = (
    "status",
    "origin",
    "created_at",
    "enqueued_at",
    "started_at",
    "ended_at",
    "worker_name",
    "meta",
    "description",
)


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def rq_timestamp(value: bytes | None) -> float | None:
    """A time as rq stores it (ISO 8601, UTC) in seconds since the epoch; None if absent or unreadable."""
    if not value:
        return None
    try:
        # rq writes naive UTC; fromisoformat is ~20x faster than strptime (a listing parses four per job).
        return datetime.fromisoformat(value.decode().rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


@dataclass
class JobRow:
    id: str
    status: str
    queue: str | None = None
    kind: str | None = None
    engine: str | None = None
    variant: str | None = None
    prompt: str | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    output_name: str | None = None
    worker: str | None = None
    created_at: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempt: int = 0
    progress: dict | None = None
    failure: dict | None = None
    video: str | None = None
    output_dir: str | None = None
    play: dict | None = None  # a live session's figures (`JobMeta.play`: chunks, frames, latency_s, ...)
    batch: str | None = None  # the batch it was submitted in (`worldplay batch`)
    depends_on: list[str] | None = None  # the jobs it runs after (a pipeline: generate -> eval)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None and self.status in ENDED else time.time()
        return round(end - self.started_at, 3)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["duration_s"] = self.duration_s
        return data

    @classmethod
    def from_hash(cls, job_id: str, values: list[bytes | None]) -> JobRow | None:
        fields = dict(zip(_ROW_FIELDS, values))
        if fields["status"] is None:
            return None
        try:
            # What rq's JSON serializer (contract.queue.SERIALIZER) wrote, read with json itself: a listing
            # then never imports rq (a sixth of `jobs list`'s start-up).
            raw = json.loads(fields["meta"]) if fields["meta"] else {}
        except ValueError:
            raw = {}
        meta = JobMeta.read(raw)
        summary = meta.summary
        return cls(
            id=job_id,
            status=fields["status"].decode(),
            queue=_text(fields["origin"]),
            kind=summary.get("kind"),
            engine=summary.get("engine"),
            variant=summary.get("variant"),
            prompt=summary.get("prompt"),
            # a session's frames grow as it plays
            frames=(meta.play or {}).get("frames", summary.get("frames")),
            width=summary.get("width"),
            height=summary.get("height"),
            output_name=summary.get("output_name"),
            batch=summary.get("batch"),
            depends_on=summary.get("depends_on"),
            worker=_text(fields["worker_name"]),
            created_at=rq_timestamp(fields["created_at"]),
            enqueued_at=rq_timestamp(fields["enqueued_at"]),
            started_at=rq_timestamp(fields["started_at"]),
            ended_at=rq_timestamp(fields["ended_at"]),
            attempt=meta.attempt,
            progress=meta.progress.model_dump() if meta.progress else None,
            failure=meta.failure.model_dump() if meta.failure else None,
            video=meta.video,
            output_dir=meta.output_dir,
            play=meta.play,
        )


def job_rows(conn: Redis, job_ids: list[str]) -> list[JobRow | None]:
    """Full rows for the given ids (None where the job no longer exists), in one pipeline."""
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(JOB_PREFIX + job_id, _ROW_FIELDS)
        results = pipe.execute()
    return [JobRow.from_hash(job_id, values) for job_id, values in zip(job_ids, results)]


@dataclass
class WorkerRow:
    name: str
    hostname: str | None
    pid: int | None
    queues: list[str]
    gpus: str
    state: str
    current_job: str | None
    last_heartbeat: float | None
    heartbeat_age_s: float | None
    successful_jobs: int
    failed_jobs: int
    stale: bool

    def to_dict(self) -> dict:
        return asdict(self)


def list_workers(conn: Redis, settings: Settings) -> list[WorkerRow]:
    """Every registered worker with its heartbeat age; `stale` when it missed several heartbeats."""
    from rq.worker_registration import REDIS_WORKER_KEYS

    keys = sorted(key.decode() for key in conn.smembers(REDIS_WORKER_KEYS))
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
            pipe.smembers(f"{key}:executions")
        results = pipe.execute()
    rows = []
    now = time.time()
    # An idle worker heartbeats every reaper interval; three missed beats make it stale.
    stale_after = 3 * (settings.worker.reaper_interval_s + settings.worker.heartbeat_s)
    for key, data, executions in zip(keys, results[::2], results[1::2]):
        if not data:
            continue
        fields = {k.decode(): v.decode() for k, v in data.items()}
        heartbeat = rq_timestamp(fields.get("last_heartbeat", "").encode())
        age = round(now - heartbeat, 1) if heartbeat else None
        current = sorted(member.decode().rsplit(":", 1)[0] for member in executions)
        rows.append(
            WorkerRow(
                name=key.removeprefix("rq:worker:"),
                hostname=fields.get("hostname"),
                pid=int(fields["pid"]) if fields.get("pid") else None,
                queues=[q for q in fields.get("queues", "").split(",") if q],
                gpus=fields.get("gpus", ""),
                state=fields.get("state", "?"),
                current_job=current[0] if current else None,
                last_heartbeat=heartbeat,
                heartbeat_age_s=age,
                successful_jobs=int(fields.get("successful_job_count") or 0),
                failed_jobs=int(fields.get("failed_job_count") or 0),
                stale=age is not None and age > stale_after,
            )
        )
    return rows


def unserved_queue_warning(conn: Redis, settings: Settings, queue: str) -> str | None:
    """A one-line warning with the command that fixes it when no live worker serves `queue`, else None.

    "Live" means registered and not stale; a worker that is busy still serves its queue (the job waits).
    """
    if any(queue in row.queues and not row.stale for row in list_workers(conn, settings)):
        return None
    start = "worldplay worker" if queue == settings.queue.default_queue else f"worldplay worker --queue {queue}"
    return f"no live worker serves queue '{queue}'; the job waits until one does (start one: {start})"
