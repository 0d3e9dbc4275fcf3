"""`jobs` readers run the reaper only when it has something to look at (`jobs_index.reap_pending`), so a
listing imports no rq: the check must see every state the reaper acts on, under rq's own key names."""

from __future__ import annotations

import time

from rq.intermediate_queue import IntermediateQueue
from rq.registry import DeferredJobRegistry, StartedJobRegistry

from worldplay_cli.contract.queue import reap, rq_queue
from worldplay_cli.contract.settings import load_settings
from worldplay_cli.contract.specs import QUEUES_SET, TASK_NOOP
from worldplay_cli.jobs_index import reap_pending


def _queue(conn, name: str = "generate"):
    conn.sadd(QUEUES_SET, name)
    return rq_queue(conn, name)


def test_nothing_to_reap_is_seen_as_such(redis_conn, worldplay_env):
    assert not reap_pending(redis_conn)  # no queue at all
    queue = _queue(redis_conn)
    queue.enqueue(TASK_NOOP)  # waiting in its queue: nothing for the reaper
    running = queue.enqueue(TASK_NOOP)
    # A running job whose worker heartbeats: its started entry expires in the future.
    redis_conn.zadd(StartedJobRegistry(queue.name, connection=redis_conn).key, {f"{running.id}:run": time.time() + 60})
    assert not reap_pending(redis_conn)
    assert reap(redis_conn, load_settings({}), force=True) == []


def test_a_lost_job_is_pending(redis_conn, worldplay_env):
    queue = _queue(redis_conn)
    job = queue.enqueue(TASK_NOOP)
    key = StartedJobRegistry(queue.name, connection=redis_conn).key
    redis_conn.zadd(key, {f"{job.id}:run": time.time() - 1})  # its worker stopped heartbeating
    assert reap_pending(redis_conn)
    redis_conn.zrem(key, f"{job.id}:run")
    assert not reap_pending(redis_conn)


def test_a_job_taken_but_not_started_is_pending(redis_conn, worldplay_env):
    queue = _queue(redis_conn)
    job = queue.enqueue(TASK_NOOP)
    # What a worker's dequeue does (BLMOVE to the intermediate list) before it starts the job.
    redis_conn.lmove(queue.key, IntermediateQueue.get_intermediate_queue_key(queue.key))
    assert reap_pending(redis_conn)
    reap(redis_conn, load_settings({}), force=True)  # notes when it first saw the entry
    assert redis_conn.exists(IntermediateQueue(queue.key, redis_conn).get_first_seen_key(job.id))


def test_a_deferred_job_is_pending(redis_conn, worldplay_env):
    queue = _queue(redis_conn)
    parent = queue.enqueue(TASK_NOOP)
    child = queue.enqueue(TASK_NOOP, depends_on=parent)
    assert child.id.encode() in redis_conn.zrange(DeferredJobRegistry(queue.name, connection=redis_conn).key, 0, -1)
    assert reap_pending(redis_conn)
