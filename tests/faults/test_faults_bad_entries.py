"""Issue #17: one malformed queue entry must not take down the worker that dequeues it.

Anyone with write access to Redis (or a bug) can put anything on a queue list. A real worker meets an
entry that is no rq job id and one whose job hash does not decode: both are logged and set aside (kept in
`worldplay:set-aside` with the reason), and the worker serves the job behind them.
"""

from __future__ import annotations

import json

from rq.job import JobStatus

from spine_util import wait_until
from worldplay_cli.contract.queue import SET_ASIDE_KEY, fetch_job, rq_queue
from worldplay_cli.contract.specs import TASK_NOOP


def test_malformed_entries_are_set_aside_and_the_worker_serves_the_next_job(redis_conn, start_worker):
    queue = rq_queue(redis_conn, "generate")
    redis_conn.rpush(queue.key, "../../etc")
    redis_conn.hset("rq:job:undecodable", mapping={"data": "{}", "status": "no-such-status", "created_at": "yesterday"})
    redis_conn.rpush(queue.key, "undecodable")
    good = queue.enqueue(TASK_NOOP)
    worker = start_worker("generate")
    wait_until(
        lambda: fetch_job(redis_conn, good.id).get_status().value == "finished",
        30,
        what="the job behind the bad entries",
    )
    assert worker.poll() is None
    set_aside = [json.loads(record) for record in redis_conn.lrange(SET_ASIDE_KEY, 0, -1)]
    assert [record["entry"] for record in set_aside] == ["../../etc", "undecodable"]
    assert all(record["error"] for record in set_aside)
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
    assert "set aside" in worker.log_path.read_text()


def test_a_stale_entry_of_a_job_that_already_ended_is_dropped_not_run_again(redis_conn, start_worker):
    # A job re-queued as lost whose first run then finished after all: its id is still on the queue.
    queue = rq_queue(redis_conn, "generate")
    ended = queue.enqueue(TASK_NOOP)
    ended.set_status(JobStatus.FINISHED)
    behind = queue.enqueue(TASK_NOOP)
    start_worker("generate")
    wait_until(lambda: fetch_job(redis_conn, behind.id).get_status().value == "finished", 30, what="the job behind it")
    job = fetch_job(redis_conn, ended.id)
    assert job.get_status().value == "finished" and job.started_at is None  # never run again
    assert redis_conn.llen(queue.key) == 0 and redis_conn.llen(queue.intermediate_queue_key) == 0
