"""`jobs list` reads one page (`newest_page`): the same jobs, order, filters and counts as the full read
model (`JobsIndex`), on a real Redis with jobs in every state (stopped ones among the failed), shared
creation times, and records past their expiry."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET, STOPPED_SET
from worldplay_cli.jobs_index import JobQuery, JobsIndex, newest_page
from worldplay_cli.rows import rq_timestamp

_REGISTRY = {"started": "rq:wip:", "finished": "rq:finished:", "failed": "rq:failed:", "stopped": "rq:failed:"}
_STATES = ("queued", "started", "finished", "failed", "stopped", "canceled", "deferred")


def _fill(conn, count: int) -> None:
    """`count` jobs as rq and worldplay leave them, plus the leftovers a listing must not show: a finished
    job whose record expired (rq removes its registry entry lazily) and an index entry without a record."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    alive, expired = time.time() + 3600, time.time() - 5
    with conn.pipeline(transaction=False) as pipe:
        for index in range(count):
            job_id = f"job-{index:04d}"
            state, queue = _STATES[index % len(_STATES)], ("generate", "train")[index % 4 == 0]
            # Some jobs share a creation time (ties go by id).
            created = (base + timedelta(seconds=(index * 7) % 50, microseconds=index % 3)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            fields = {"status": state, "origin": queue, "created_at": created}
            fields["meta"] = json.dumps({"summary": {"kind": "generate", "prompt": f"scene {index}"}})
            pipe.hset(f"rq:job:{job_id}", mapping=fields)
            if state == "queued":
                pipe.rpush(f"rq:queue:{queue}", job_id)
            elif state in ("canceled", "deferred"):
                pipe.zadd(f"rq:{state}:{queue}", {job_id: 1})  # rq scores these by when, not by expiry
            else:
                member = f"{job_id}:exec" if state == "started" else job_id
                pipe.zadd(_REGISTRY[state] + queue, {member: alive})
            if state == "stopped":
                pipe.sadd(STOPPED_SET, job_id)  # as the worker notes a stop
            pipe.zadd(JOBS_INDEX, {job_id: rq_timestamp(created.encode())})
        pipe.sadd(STOPPED_SET, "job-0000")  # stopped once, then retried: queued now
        pipe.zadd("rq:finished:generate", {"expired-finished": expired})  # its record is gone
        pipe.zadd(JOBS_INDEX, {"expired-finished": 2e9, "expired-job": 2e9 + 1})  # the newest, both gone
        pipe.sadd(QUEUES_SET, "generate", "train")
        pipe.execute()


@pytest.mark.parametrize(
    ("statuses", "queue", "offset", "limit"),
    [
        ((), None, 0, 50),
        (("failed",), None, 0, 7),
        (("finished", "queued"), "generate", 10, 9),
        (("stopped",), "train", 0, 50),
        (("stopped", "queued"), None, 0, 50),
        (("failed", "stopped", "canceled", "deferred"), None, 0, 100),
        (("started",), None, 0, 50),
        ((), "nowhere", 0, 10),
        ((), "train", 0, 25),
        ((), None, 190, 25),  # the last page
        ((), None, 5000, 30),  # past the end: the last page
    ],
)
def test_a_page_is_what_the_full_read_model_shows(redis_conn, statuses, queue, offset, limit):
    _fill(redis_conn, 200)
    page = newest_page(redis_conn, frozenset(statuses), queue, offset, limit)
    index = JobsIndex(redis_conn)
    index.refresh()
    query = JobQuery(
        statuses=frozenset(statuses), queues=frozenset([queue] if queue else ()), offset=offset, limit=limit
    )
    expected = index.query(query)
    assert [row.id for row in page.rows] == [row.id for row in expected.rows]
    assert page.rows == expected.rows
    assert (page.matched, page.offset, page.counts) == (expected.matched, expected.offset, expected.counts)
    assert expected.counts["stopped"] == 28 and expected.matched > 0 or queue == "nowhere"


def test_the_first_page_drops_expired_ids_and_settled_stops(redis_conn):
    _fill(redis_conn, 30)
    page = newest_page(redis_conn, limit=10)
    assert [row.id for row in page.rows][:1] != ["expired-job"] and len(page.rows) == 10
    assert redis_conn.zscore(JOBS_INDEX, "expired-job") is None
    assert redis_conn.zscore(JOBS_INDEX, "expired-finished") is None
    stopped = {member.decode() for member in redis_conn.smembers(STOPPED_SET)}
    assert "job-0000" not in stopped  # retried: no longer a stop
    assert {"job-0004", "job-0011"} <= stopped  # stopped, kept to tell them from the failed
    assert page.counts["stopped"] == 4 and page.counts["failed"] == 4


def test_an_empty_queue_lists_nothing(redis_conn):
    page = newest_page(redis_conn)
    assert page.rows == [] and page.matched == 0 and sum(page.counts.values()) == 0


def test_every_job_the_queue_enqueues_is_indexed_by_its_creation_time(redis_conn):
    from worldplay_cli.contract.queue import rq_queue
    from worldplay_cli.contract.specs import TASK_NOOP

    queue = rq_queue(redis_conn, "generate")
    parent = queue.enqueue(TASK_NOOP)
    child = queue.enqueue(TASK_NOOP, depends_on=parent)  # deferred: never on the queue list yet
    assert child.get_status().value == "deferred"
    for job in (parent, child):
        created = redis_conn.hget(f"rq:job:{job.id}", "created_at")
        assert redis_conn.zscore(JOBS_INDEX, job.id) == rq_timestamp(created)
    redis_conn.sadd(QUEUES_SET, "generate")
    page = newest_page(redis_conn)
    assert [row.id for row in page.rows] == [child.id, parent.id]
    assert (page.counts["queued"], page.counts["deferred"], page.matched) == (1, 1, 2)
