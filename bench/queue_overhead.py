"""Queue overhead: our worker vs a plain rq SimpleWorker, same Redis, same no-op task, same run.

    python bench/queue_overhead.py [--jobs 300] [--latency-samples 30]

Measures, for each worker:
- throughput: N no-op jobs drained by one worker process (first start to last end, from rq's own
  timestamps, so process start-up is excluded);
- latency: enqueue -> start of one job on an idle worker (median and p90 over samples).
Ours forks a work horse per job (so a job can be killed with its whole process tree), sends heartbeats
and sweeps the job's processes when it ends; SimpleWorker runs the function in-process and can do none
of that; rq's forking `Worker` (the third column) shows how much of the gap is the fork itself.
Against video jobs of seconds to hours, tens of milliseconds per job are noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worldplay_cli import redis_server  # noqa: E402
from worldplay_cli.contract.queue import SERIALIZER, fetch_job, rq_queue  # noqa: E402
from worldplay_cli.contract.settings import ServerSettings, Settings  # noqa: E402
from worldplay_cli.contract.specs import TASK_NOOP  # noqa: E402

PLAIN_RQ_WORKER = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer
conn = Redis.from_url(sys.argv[1])
queue = Queue(sys.argv[2], connection=conn, serializer=JSONSerializer)
worker_class = SimpleWorker if sys.argv[4] == "simple" else Worker
worker_class([queue], connection=conn, serializer=JSONSerializer).work(burst=sys.argv[3] == "burst", logging_level="WARNING")
"""


def start_worker(kind: str, url: str, queue: str, burst: bool, env: dict) -> subprocess.Popen:
    if kind == "ours":
        args = [sys.executable, "-m", "worker", "run", "--queue", queue, "--log-level", "WARNING"] + (
            ["--burst"] if burst else []
        )
    else:
        args = [sys.executable, "-c", PLAIN_RQ_WORKER, url, queue, "burst" if burst else "serve", kind]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput(kind: str, conn, url: str, jobs: int, env: dict) -> float:
    queue = rq_queue(conn, f"bench-{kind}-throughput")
    ids = [queue.enqueue(TASK_NOOP, result_ttl=600).id for _ in range(jobs)]
    worker = start_worker(kind, url, queue.name, burst=True, env=env)
    worker.wait()
    fetched = [fetch_job(conn, job_id) for job_id in ids]
    if any(job.get_status().value != "finished" for job in fetched):
        raise SystemExit(f"{kind}: not every job finished")
    first = min(job.started_at for job in fetched)
    last = max(job.ended_at for job in fetched)
    return jobs / (last - first).total_seconds()


def latency(kind: str, conn, url: str, samples: int, env: dict) -> list[float]:
    queue = rq_queue(conn, f"bench-{kind}-latency")
    worker = start_worker(kind, url, queue.name, burst=False, env=env)
    try:
        warmup = queue.enqueue(TASK_NOOP)
        wait_finished(conn, warmup.id)
        values = []
        for _ in range(samples):
            job = queue.enqueue(TASK_NOOP)
            job = wait_finished(conn, job.id)
            values.append((job.started_at - job.enqueued_at).total_seconds() * 1000)
        return values
    finally:
        worker.terminate()
        worker.wait()


def wait_finished(conn, job_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = fetch_job(conn, job_id)
        if job.get_status().value in ("finished", "failed"):
            return job
        time.sleep(0.002)
    raise SystemExit(f"job {job_id} did not finish within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--latency-samples", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(server=ServerSettings(data_dir=Path(tmp) / "redis"))
        redis_server.start(settings)
        try:
            url = redis_server.redis_url(settings)
            conn = redis_server.connect_url(url)
            env = {**os.environ, "WORLDPLAY_REDIS_URL": url, "WORLDPLAY_OUTPUT_ROOT": str(Path(tmp) / "out")}
            results = {}
            for kind in ("ours", "simple", "fork"):
                rate = throughput(kind, conn, url, args.jobs, env)
                samples = latency(kind, conn, url, args.latency_samples, env)
                results[kind] = (rate, statistics.median(samples), statistics.quantiles(samples, n=10)[-1])
        finally:
            redis_server.stop(settings)

    ours, simple, fork = results["ours"], results["simple"], results["fork"]
    print(f"serializer: {SERIALIZER.__name__}, {args.jobs} no-op jobs, {args.latency_samples} latency samples")
    print(f"{'metric':<30}{'ours':>9}{'SimpleWorker':>14}{'rq Worker':>11}{'ours/Simple':>13}{'ours/Worker':>13}")
    rows = (("throughput (jobs/s)", 0), ("enqueue->start median (ms)", 1), ("enqueue->start p90 (ms)", 2))
    for label, index in rows:
        print(
            f"{label:<30}{ours[index]:>9.1f}{simple[index]:>14.1f}{fork[index]:>11.1f}"
            f"{ours[index] / simple[index]:>13.2f}{ours[index] / fork[index]:>13.2f}"
        )


if __name__ == "__main__":
    main()
