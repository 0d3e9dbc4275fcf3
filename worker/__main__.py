"""`python -m worker run ...`: one rq worker process serving one queue with one GPU set.

Started by `worldplay worker` (one per GPU set), which resolves the Redis URL (starting the embedded
server if needed) and passes it in the environment; the worker reads everything else from the same
settings (flags > WORLDPLAY_* environment > config file > defaults). A worker only ever connects: it
never starts an embedded server (one found gone is restarted by the next CLI command, which says so).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

# How long a worker (and its work horse, which shares the client) keeps retrying a Redis that went away,
# backing off up to 2 s between tries, before giving up: long enough for Redis to restart from its AOF,
# so that a busy worker carries on with its job instead of quitting mid-job.
REDIS_OUTAGE_RETRIES = 40
REDIS_OUTAGE_BACKOFF_CAP_S = 2.0


def _parse_gpus(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(part) for part in text.split("+"))


def _exit_with_parent() -> None:
    """Warm-shut down if the process that started us (the `worldplay worker` supervisor) disappears."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def run(args: argparse.Namespace) -> int:
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry

    from worker.rq_worker import WorldplayWorker
    from worldplay_cli.contract.settings import load_settings, mask_url

    settings = load_settings()
    if not settings.redis_url:
        sys.stderr.write("error: no Redis URL (hint: start workers with `worldplay worker`, which sets it)\n")
        return 2
    gpus = _parse_gpus(args.gpus)
    if args.gpus:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
    # At start-up, no waiting: a Redis that is not there is a configuration error, said at once (and the
    # `worldplay worker` supervisor retries later).
    probe = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))
    try:
        probe.ping()
    except redis.RedisError as exc:
        sys.stderr.write(f"error: cannot reach Redis at {mask_url(settings.redis_url)}: {exc}\n")
        return 1
    finally:
        probe.close()
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=REDIS_OUTAGE_BACKOFF_CAP_S, base=0.1), REDIS_OUTAGE_RETRIES),
    )
    name = args.name or f"{socket.gethostname()}.{os.getpid()}" + (f".gpu{'+'.join(map(str, gpus))}" if gpus else "")
    if args.exit_with_parent:
        _exit_with_parent()
    worker = WorldplayWorker(args.queue, connection, settings, gpus=gpus, name=name)
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="serve one queue")
    run_parser.add_argument("--queue", required=True)
    run_parser.add_argument("--gpus", default="", help="one GPU set, ids joined by '+', e.g. 0+1")
    run_parser.add_argument("--name", default=None)
    run_parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    run_parser.add_argument("--max-jobs", type=int, default=None)
    run_parser.add_argument("--exit-with-parent", action="store_true")
    run_parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
