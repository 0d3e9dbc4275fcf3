"""Queue overhead: our worker vs a plain rq SimpleWorker, same Redis, same no-op task, same run.

    python bench/queue_overhead.py [--jobs 300] [--rounds 3] [--latency-samples 30]

Measures, for each worker:
- throughput: N no-op jobs drained by one worker process (first start to last end, from rq's own
  timestamps, so process start-up is excluded), the median of `--rounds` rounds taken in turn;
- CPU per job: the burst worker's CPU time (work horses included) beyond that of a burst on an empty
  queue, per job; on a busy machine the most stable figure;
- latency: enqueue -> start of one job on an idle worker (median and p90 over samples).
Ours forks a work horse per job (so a job can be killed with its whole process tree), sends heartbeats
and ends the job's processes when it ends (found below the worker, a child subreaper, on Linux); SimpleWorker runs the function in-process and can do none
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


KINDS = ("ours", "simple", "fork")


def start_worker(kind: str, url: str, queue: str, burst: bool, env: dict) -> subprocess.Popen:
    if kind == "ours":
        args = [sys.executable, "-m", "worker", "run", "--queue", queue, "--log-level", "WARNING"] + (
            ["--burst"] if burst else []
        )
    else:
        args = [sys.executable, "-c", PLAIN_RQ_WORKER, url, queue, "burst" if burst else "serve", kind]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drain(kind: str, url: str, queue: str, env: dict) -> float:
    """Run a burst worker until `queue` is empty; its CPU seconds, work horses included (user + sys)."""
    worker = start_worker(kind, url, queue, burst=True, env=env)
    _, _, usage = os.wait4(worker.pid, 0)
    worker.returncode = 0
    return usage.ru_utime + usage.ru_stime


def throughput(kind: str, conn, url: str, jobs: int, env: dict) -> tuple[float, float]:
    """(jobs per second, CPU milliseconds per job beyond the worker's own start and stop)."""
    queue = rq_queue(conn, f"bench-{kind}-throughput")
    idle_cpu = drain(kind, url, queue.name, env)
    ids = [queue.enqueue(TASK_NOOP, result_ttl=600).id for _ in range(jobs)]
    busy_cpu = drain(kind, url, queue.name, env)
    fetched = [fetch_job(conn, job_id) for job_id in ids]
    if any(job.get_status().value != "finished" for job in fetched):
        raise SystemExit(f"{kind}: not every job finished")
    first = min(job.started_at for job in fetched)
    last = max(job.ended_at for job in fetched)
    return jobs / (last - first).total_seconds(), 1000 * (busy_cpu - idle_cpu) / jobs


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
        status = job.get_status().value
        # rq can show the status a moment before the start time it writes with the result
        if status == "finished" and job.started_at is not None:
            return job
        if status == "failed":  # a latency without a start would be meaningless
            result = job.latest_result()
            raise SystemExit(f"job {job_id} failed on {job.origin}: {result.exc_string if result else '?'}")
        time.sleep(0.002)
    raise SystemExit(f"job {job_id} did not finish within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--latency-samples", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(server=ServerSettings(data_dir=Path(tmp) / "redis"))
        redis_server.start(settings)
        try:
            url = redis_server.redis_url(settings)
            conn = redis_server.connect_url(url)
            env = {**os.environ, "WORLDPLAY_REDIS_URL": url, "WORLDPLAY_OUTPUT_ROOT": str(Path(tmp) / "out")}
            # Rounds in turn (ours, simple, fork, ours, ...), so a drift of a shared machine's speed hits all.
            rates = {kind: [] for kind in KINDS}
            cpu = {kind: [] for kind in KINDS}
            for _ in range(args.rounds):
                for kind in KINDS:
                    rate, cpu_ms = throughput(kind, conn, url, args.jobs, env)
                    rates[kind].append(rate)
                    cpu[kind].append(cpu_ms)
            results = {}
            for kind in KINDS:
                samples = latency(kind, conn, url, args.latency_samples, env)
                results[kind] = (
                    statistics.median(rates[kind]),
                    statistics.median(cpu[kind]),
                    statistics.median(samples),
                    statistics.quantiles(samples, n=10)[-1],
                )
        finally:
            redis_server.stop(settings)

    ours, simple, fork = results["ours"], results["simple"], results["fork"]
    paired = statistics.median(a / b for a, b in zip(rates["ours"], rates["fork"]))
    # CPU per job is what a busy machine distorts least: Worker's over ours estimates the throughput ratio
    # of an idle machine, where draining no-op jobs is CPU-bound.
    cpu_ratio = statistics.median(b / a for a, b in zip(cpu["ours"], cpu["fork"]))
    print(
        f"serializer: {SERIALIZER.__name__}, {args.rounds} rounds of {args.jobs} no-op jobs, "
        f"{args.latency_samples} latency samples"
    )
    print(f"{'metric':<30}{'ours':>9}{'SimpleWorker':>14}{'rq Worker':>11}{'ours/Simple':>13}{'ours/Worker':>13}")
    rows = (
        ("throughput (jobs/s)", 0),
        ("CPU per job (ms)", 1),
        ("enqueue->start median (ms)", 2),
        ("enqueue->start p90 (ms)", 3),
    )
    for label, index in rows:
        print(
            f"{label:<30}{ours[index]:>9.1f}{simple[index]:>14.1f}{fork[index]:>11.1f}"
            f"{ours[index] / simple[index]:>13.2f}{ours[index] / fork[index]:>13.2f}"
        )
    print(f"throughput ours/Worker, median of the rounds' ratios: {paired:.2f} (target >= 0.95)")
    print(f"CPU per job Worker/ours, median of the rounds' ratios: {cpu_ratio:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
