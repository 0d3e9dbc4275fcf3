"""Dashboard refresh time vs `rq info`-style full reads, with 100, 1,000 and 10,000 jobs in a real Redis.

A private redis-server (the embedded-server code, in a temp dir) is filled with jobs laid out as rq lays
them out: job hashes with worldplay's `meta` (spec summary, progress, failure), the jobs index, and each
job in its status registry (mostly finished and failed, some queued, a few running). Between refreshes
the running jobs report progress, as live workers do. Timed, median of `--rounds`:

- `dashboard`: one steady-state dashboard refresh (`RedisSource.snapshot`: incremental index refresh,
  sort, filter, page, workers, suspension flag); the target is <= 100 ms at 10,000 jobs;
- `cold`: the first refresh (every job read once);
- `jobs list`: `worldplay_cli.jobs.list_jobs`, a one-shot `JobsIndex` (a cold read: membership scan + every row);
- `rq full read`: every registry's ids, then every job fetched and decoded (`Job.fetch_many`), which is
  what `rq info`-style dashboards do on every refresh.

    python bench/dashboard.py [--sizes 100,1000,10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNNING = 4  # jobs that report progress between refreshes


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(conn, count: int) -> list[str]:
    """`count` jobs on queue `generate`: 60% finished, 30% failed, 5% canceled, RUNNING started, rest queued."""
    from rq import Queue

    from worldplay_cli.contract.queue import rq_queue
    from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET, TASK_NOOP
    from worldplay_cli.rows import rq_timestamp

    queue = rq_queue(conn, "generate")
    conn.flushdb()
    now = time.time()
    ids = [f"20260101-{index // 60 % 60:02d}{index % 60:02d}00-{index:06x}" for index in range(count)]
    for start in range(0, count, 1000):
        batch = [
            Queue.prepare_data(
                TASK_NOOP,
                job_id=job_id,
                meta={
                    "summary": {
                        "kind": "generate",
                        "engine": "preview",
                        "variant": "ar-distilled",
                        "prompt": f"scene {index}: a long walk through a rainy city at night",
                        "frames": 125,
                        "width": 832,
                        "height": 480,
                        "queue": "generate",
                    },
                    "attempt": 1,
                },
                description=f"generate preview/ar-distilled 125f: scene {index}",
            )
            for index, job_id in enumerate(ids[start : start + 1000], start)
        ]
        queue.enqueue_many(batch)
    conn.delete(queue.key)
    states = {}
    for index, job_id in enumerate(ids):
        share = index % 20
        states[job_id] = (
            "started"
            if index < RUNNING
            else "finished"
            if share < 12
            else "failed"
            if share < 18
            else "canceled"
            if share == 18
            else "queued"
        )
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "created_at")
        created = dict(zip(ids, (rq_timestamp(value) for value in pipe.execute())))
    with conn.pipeline(transaction=False) as pipe:
        for index, job_id in enumerate(ids):
            state = states[job_id]
            key = f"rq:job:{job_id}"
            fields = {"status": state}
            if state in ("started", "finished", "failed"):
                fields["started_at"] = _stamp(now - 600 + index % 300)
                fields["worker_name"] = f"gpu-box.{index % 8}"
            if state in ("finished", "failed"):
                fields["ended_at"] = _stamp(now - 300 + index % 300)
            if state == "failed":
                meta = json.loads(conn.hget(key, "meta"))
                meta["failure"] = {"kind": "oom", "message": "out of memory", "hint": "use fewer frames"}
                fields["meta"] = json.dumps(meta)
            pipe.hset(key, mapping=fields)
            registry = {
                "started": "rq:wip:generate",
                "finished": "rq:finished:generate",
                "failed": "rq:failed:generate",
                "canceled": "rq:canceled:generate",
            }.get(state)
            member = f"{job_id}:exec{index}" if state == "started" else job_id
            if registry:
                pipe.zadd(registry, {member: now + 86400})
            else:
                pipe.rpush(queue.key, job_id)
            pipe.zadd(JOBS_INDEX, {job_id: created[job_id]})  # as `contract.queue` indexes a job
        pipe.sadd(QUEUES_SET, "generate")
        pipe.execute()
    return [job_id for job_id in ids if states[job_id] == "started"]


def report_progress(conn, running: list[str], step: int) -> None:
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.contract.specs import Progress

    for job_id in running:
        job = fetch_job(conn, job_id)
        job.meta["progress"] = Progress(
            stage="denoise", step=step % 50, total=50, chunk=1, num_chunks=8, fraction=(step % 50) / 50, eta_s=30.0
        ).model_dump()
        job.save_meta()


def rq_full_read(conn) -> int:
    from rq.job import Job
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )

    from worldplay_cli.contract.queue import SERIALIZER, rq_queue

    queue = rq_queue(conn, "generate")
    ids = list(queue.get_job_ids())
    for registry in (
        StartedJobRegistry,
        FinishedJobRegistry,
        FailedJobRegistry,
        CanceledJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
    ):
        ids += registry(queue=queue).get_job_ids(cleanup=False)
    jobs = Job.fetch_many(ids, connection=conn, serializer=SERIALIZER)
    return sum(job is not None for job in jobs)


def median_ms(function, rounds: int, between=None) -> float:
    times = []
    for round_index in range(rounds):
        if between is not None:
            between(round_index)
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from worldplay_cli import redis_server
    from worldplay_cli.contract.settings import ServerSettings, Settings
    from worldplay_cli.jobs import list_jobs
    from worldplay_cli.jobs_index import JobQuery
    from worldplay_cli.tui.dashboard.source import RedisSource

    with tempfile.TemporaryDirectory(prefix="wp-bench-") as tmp:
        settings = Settings(server=ServerSettings(data_dir=Path(tmp) / "redis"), output_root=Path(tmp) / "out")
        redis_server.start(settings)
        try:
            url = redis_server.redis_url(settings)
            conn = redis_server.connect_url(url)
            print(
                f"{'jobs':>7} {'dashboard ms':>13} {'cold ms':>8} {'jobs list ms':>13} {'rq full read ms':>16} "
                f"{'full/dashboard':>15} {'target':>7}"
            )
            for size in (int(part) for part in args.sizes.split(",")):
                running = fill(conn, size)
                source = RedisSource(url, settings, nvml=False)
                query = JobQuery(sort="created", descending=True, limit=100)
                cold = median_ms(lambda: source.snapshot(query), 1)
                steady = median_ms(
                    lambda: source.snapshot(query),
                    args.rounds,
                    between=lambda step: report_progress(conn, running, step),
                )
                listing = median_ms(lambda: list_jobs(conn, offset=0, limit=100), args.rounds)
                full = median_ms(lambda: rq_full_read(conn), max(3, args.rounds // 3))
                target = "ok" if size < 10000 or steady <= 100 else "MISSED"
                print(
                    f"{size:>7} {steady:>13.1f} {cold:>8.1f} {listing:>13.1f} {full:>16.1f} "
                    f"{full / steady:>14.1f}x {target:>7}"
                )
                source.conn.close()
        finally:
            redis_server.stop(settings)


if __name__ == "__main__":
    main()
