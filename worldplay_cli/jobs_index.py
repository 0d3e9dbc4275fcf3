"""A fast, incremental view of every job, for listings that refresh (the dashboard, `worldplay jobs list`).

Reading every job hash on every refresh costs one Redis reply per job (`rq info`-style), which is
hundreds of milliseconds at 10,000 jobs. Instead, one pipelined round trip reads the job *ids* of every
rq registry of every queue (a job's registry says its status), and only the jobs that can have changed
are read again:

- jobs seen for the first time, or whose registry changed since the last refresh;
- running jobs (their progress moves) and jobs that changed in the last `hot_window_s` seconds (the
  worker writes the failure reason into `meta` just after rq moves the job to its final registry);
- jobs the caller invalidated (after an action on them).

Rows keep just what a listing shows (status, spec summary, progress, failure kind, times, worker), so
sorting, filtering and paging 10,000 rows is plain Python over cached rows. Nothing here imports the UI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from worldplay_cli.jobs import ENDED, STATUSES, JobRow, job_rows
from worldplay_cli.schema import JOBS_INDEX, QUEUES_SET

if TYPE_CHECKING:
    from redis import Redis

RQ_QUEUES = "rq:queues"
RQ_QUEUE_PREFIX = "rq:queue:"
# registry name -> key template; a job's registry is its status as far as change detection goes.
_REGISTRIES = (
    ("started", "rq:wip:{}"),
    ("finished", "rq:finished:{}"),
    ("failed", "rq:failed:{}"),
    ("canceled", "rq:canceled:{}"),
    ("deferred", "rq:deferred:{}"),
    ("scheduled", "rq:scheduled:{}"),
)

SORT_KEYS = ("id", "kind", "status", "engine", "prompt", "progress", "eta", "duration", "worker", "created", "queue")


def duration_s(row: JobRow, now: float) -> float | None:
    """Run time: until the job ended, or until `now` while it runs."""
    if row.started_at is None:
        return None
    if row.ended_at is not None and row.status in ENDED:
        return max(0.0, row.ended_at - row.started_at)
    return max(0.0, now - row.started_at) if row.status == "started" else None


def fraction(row: JobRow) -> float:
    if row.status == "finished":
        return 1.0
    return float((row.progress or {}).get("fraction") or 0.0)


def search_text(row: JobRow) -> str:
    """Lower-cased text the text filter matches against."""
    failure = (row.failure or {}).get("message")
    parts = (row.id, row.prompt, row.engine, row.variant, row.worker, row.queue, row.output_name, failure)
    return " ".join(part for part in parts if part).lower()


@dataclass(frozen=True)
class JobQuery:
    sort: str = "created"
    descending: bool = True
    statuses: frozenset[str] = frozenset()  # empty: every status
    kinds: frozenset[str] = frozenset()
    text: str = ""
    offset: int = 0
    limit: int = 100


@dataclass
class SortedPage:
    rows: list[JobRow]
    matched: int  # rows matching the filter (all pages)
    offset: int
    limit: int
    counts: dict[str, int]  # every job in Redis, by status (before filtering)
    kinds: list[str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class RefreshStats:
    jobs: int
    reread: int
    removed: int
    seconds: float
    changed: bool


def _sort_value(name: str, now: float) -> Callable[[JobRow], object]:
    status_rank = {status: rank for rank, status in enumerate(STATUSES)}
    getters: dict[str, Callable[[JobRow], object]] = {
        "id": lambda row: row.id,
        "kind": lambda row: row.kind,
        "status": lambda row: status_rank.get(row.status, len(STATUSES)),
        "engine": lambda row: f"{row.engine or ''}/{row.variant or ''}",
        "prompt": lambda row: (row.prompt or "").lower() or None,
        "progress": fraction,
        "eta": lambda row: (row.progress or {}).get("eta_s") if row.status == "started" else None,
        "duration": lambda row: duration_s(row, now),
        "worker": lambda row: row.worker or None,
        "created": lambda row: row.enqueued_at or row.created_at,
        "queue": lambda row: row.queue,
    }
    return getters[name]


class JobsIndex:
    """Cached rows of every job, refreshed incrementally from Redis. Not thread-safe: one refresher."""

    def __init__(self, conn: Redis, hot_window_s: float = 15.0, clock: Callable[[], float] = time.time):
        self.conn = conn
        self.hot_window_s = hot_window_s
        self.clock = clock
        self.rows: dict[str, JobRow] = {}
        self._search: dict[str, str] = {}
        self._registry: dict[str, str | None] = {}  # job id -> registry seen at the last refresh
        self._changed_at: dict[str, float] = {}
        self._gone: set[str] = set()  # ids listed somewhere whose job record no longer exists
        self._invalid: set[str] = set()
        self._version = 0
        self._sorted: tuple | None = None  # (version, sort, descending, now bucket) -> ordered rows

    @property
    def version(self) -> int:
        """Bumped whenever a row changes; equal versions mean identical listings."""
        return self._version

    def invalidate(self, job_ids) -> None:
        """Read these jobs again at the next refresh (after acting on them)."""
        self._invalid.update(job_ids)

    def queue_names(self) -> list[str]:
        names = {name.decode() for name in self.conn.smembers(QUEUES_SET)}
        names.update(key.decode().removeprefix(RQ_QUEUE_PREFIX) for key in self.conn.smembers(RQ_QUEUES))
        return sorted(names)

    def _memberships(self) -> dict[str, str | None]:
        """job id -> registry name ('queued' for the queue list), None for ids only in our index."""
        queues = self.queue_names()
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.zrange(JOBS_INDEX, 0, -1)
            for queue in queues:
                pipe.lrange(RQ_QUEUE_PREFIX + queue, 0, -1)
                for _, template in _REGISTRIES:
                    pipe.zrange(template.format(queue), 0, -1)
            replies = pipe.execute()
        found: dict[str, str | None] = dict.fromkeys((raw.decode() for raw in replies[0]), None)
        position = 1
        for _ in queues:
            for raw in replies[position]:
                found[raw.decode()] = "queued"
            position += 1
            for name, _ in _REGISTRIES:
                for raw in replies[position]:
                    # started entries are `<job id>:<execution id>`; job ids never contain ':'.
                    found[raw.decode().partition(":")[0]] = name
                position += 1
        return found

    def refresh(self) -> RefreshStats:
        started = time.perf_counter()
        now = self.clock()
        found = self._memberships()
        removed = [job_id for job_id in self.rows if job_id not in found]
        for job_id in removed:
            del self.rows[job_id]
            self._search.pop(job_id, None)
            self._registry.pop(job_id, None)
            self._changed_at.pop(job_id, None)
        self._gone.intersection_update(found)
        stale = [
            job_id
            for job_id, registry in found.items()
            if registry == "started"
            or job_id in self._invalid
            or (job_id not in self.rows and job_id not in self._gone)
            or (job_id in self._registry and self._registry[job_id] != registry)
            or now - self._changed_at.get(job_id, -1e18) < self.hot_window_s
        ]
        changed = bool(removed)
        for job_id, row in zip(stale, job_rows(self.conn, stale) if stale else ()):
            if row is None:
                self._gone.add(job_id)
                changed |= self.rows.pop(job_id, None) is not None
                self._search.pop(job_id, None)
                continue
            self._gone.discard(job_id)
            if self.rows.get(job_id) != row:
                self.rows[job_id] = row
                self._search[job_id] = search_text(row)
                changed = True
                # Known jobs that moved keep being re-read for a while (their meta may still change).
                moved = job_id in self._registry and self._registry[job_id] != found[job_id]
                if moved or job_id in self._invalid:
                    self._changed_at[job_id] = now
        for job_id in stale:
            self._registry[job_id] = found[job_id]
        self._invalid.clear()
        for job_id in [job_id for job_id, at in self._changed_at.items() if now - at >= self.hot_window_s]:
            del self._changed_at[job_id]
        if changed:
            self._version += 1
        return RefreshStats(len(self.rows), len(stale), len(removed), time.perf_counter() - started, changed)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def _ordered(self, sort: str, descending: bool, now: float) -> list[JobRow]:
        if sort not in SORT_KEYS:
            raise ValueError(f"unknown sort key {sort!r}; use one of: {', '.join(SORT_KEYS)}")
        # Durations of running jobs grow with the clock: re-sort them at most once a second.
        bucket = int(now) if sort in ("duration", "eta") else 0
        cache_key = (self._version, sort, descending, bucket)
        if self._sorted is None or self._sorted[0] != cache_key:
            value = _sort_value(sort, now)
            keyed = [(value(row), row.id, row) for row in self.rows.values()]
            # Rows without a value (no duration yet, no worker...) go last in either direction.
            present = sorted((item for item in keyed if item[0] is not None), key=lambda item: item[:2], reverse=descending)
            missing = sorted((item for item in keyed if item[0] is None), key=lambda item: item[1])
            self._sorted = (cache_key, [row for _, _, row in present + missing])
        return self._sorted[1]

    def query(self, query: JobQuery) -> SortedPage:
        now = self.clock()
        rows = self._ordered(query.sort, query.descending, now)
        text = query.text.strip().lower()
        if query.statuses or query.kinds or text:
            rows = [
                row
                for row in rows
                if (not query.statuses or row.status in query.statuses)
                and (not query.kinds or row.kind in query.kinds)
                and (not text or text in self._search[row.id])
            ]
        offset = max(0, min(query.offset, max(0, len(rows) - 1) // max(1, query.limit) * query.limit))
        kinds = sorted({row.kind for row in self.rows.values() if row.kind})
        return SortedPage(rows[offset : offset + query.limit], len(rows), offset, query.limit, self.counts(), kinds)

