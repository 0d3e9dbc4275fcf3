"""`jobs list` reads one page (`newest_page`): the same jobs, order, filters and counts as the full read
model (`JobsIndex`), on a real Redis with jobs in every state, odd times and expired records."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET
from worldplay_cli.jobs_index import JobQuery, JobsIndex, newest_page

_REGISTRY = {"started": "rq:wip:", "finished": "rq:finished:", "failed": "rq:failed:", "stopped": "rq:failed:"}
_STATES = ("queued", "started", "finished", "failed", "stopped", "canceled")


def _fill(conn, count: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with conn.pipeline(transaction=False) as pipe:
        for index in range(count):
            job_id = f"job-{index:04d}"
            state, queue = _STATES[index % len(_STATES)], ("generate", "train")[index % 4 == 0]
            # Some jobs share a time (ties go by id), some lack the fraction or the enqueue time.
            at = base + timedelta(seconds=(index * 7) % 50, microseconds=index % 3)
            fields = {"status": state, "origin": queue, "created_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            if index % 5:
                stamp = "%Y-%m-%dT%H:%M:%SZ" if index % 7 == 0 else "%Y-%m-%dT%H:%M:%S.%fZ"
                fields["enqueued_at"] = at.strftime(stamp)
            if index % 11 == 0:
                fields.pop("created_at")
                fields.pop("enqueued_at", None)
            fields["meta"] = json.dumps({"summary": {"kind": "generate", "prompt": f"scene {index}"}})
            pipe.hset(f"rq:job:{job_id}", mapping=fields)
            if state == "queued":
                pipe.rpush(f"rq:queue:{queue}", job_id)
            elif state == "canceled":
                pipe.zadd(f"rq:canceled:{queue}", {job_id: 1})
            else:
                member = f"{job_id}:exec" if state == "started" else job_id
                pipe.zadd(_REGISTRY[state] + queue, {member: 1})
            pipe.zadd(JOBS_INDEX, {job_id: index})
        pipe.zadd(JOBS_INDEX, {"expired-job": 1})  # its record is gone
        pipe.sadd(QUEUES_SET, "generate", "train")
        pipe.execute()


@pytest.mark.parametrize(
    ("statuses", "queue", "offset", "limit"),
    [
        ((), None, 0, 50),
        (("failed",), None, 0, 7),
        (("finished", "queued"), "generate", 10, 9),
        (("stopped",), "train", 0, 50),
        ((), "nowhere", 0, 10),
        ((), None, 190, 25),  # the last page, where the jobs without a time are
        ((), None, 5000, 30),  # past the end: the last page
    ],
)
def test_a_page_is_what_the_full_read_model_shows(redis_conn, statuses, queue, offset, limit):
    _fill(redis_conn, 200)
    page = newest_page(redis_conn, frozenset(statuses), queue, offset, limit)
    assert redis_conn.zscore(JOBS_INDEX, "expired-job") is None
    index = JobsIndex(redis_conn)
    index.refresh()
    query = JobQuery(
        statuses=frozenset(statuses), queues=frozenset([queue] if queue else ()), offset=offset, limit=limit
    )
    expected = index.query(query)
    assert [row.id for row in page.rows] == [row.id for row in expected.rows]
    assert page.rows == expected.rows
    assert (page.matched, page.offset, page.counts) == (expected.matched, expected.offset, expected.counts)


def test_an_empty_queue_lists_nothing(redis_conn):
    page = newest_page(redis_conn)
    assert page.rows == [] and page.matched == 0 and sum(page.counts.values()) == 0
