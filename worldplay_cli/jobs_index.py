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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET
from worldplay_cli.rows import ENDED, STATUSES, JobRow, job_rows

if TYPE_CHECKING:
    from redis import Redis

RQ_QUEUES = "rq:queues"
RQ_QUEUE_PREFIX = "rq:queue:"
# registry name -> key prefix; a job's registry is its status as far as change detection goes.
_REGISTRIES = (
    ("started", "rq:wip:"),
    ("finished", "rq:finished:"),
    ("failed", "rq:failed:"),
    ("canceled", "rq:canceled:"),
    ("deferred", "rq:deferred:"),
    ("scheduled", "rq:scheduled:"),
)

# Every job id with the registry it is in ("" when only our index lists it), as ONE string of
# "id\tregistry" lines: a single bulk reply parses in microseconds, 20,000 array items take tens of ms.
# Started entries are `<job id>:<execution id>`; job ids never contain ':'.
_MEMBERSHIP_LUA = r"""
local lines, seen = {}, {}
local function add(id, registry)
  if not seen[id] then
    seen[id] = true
    lines[#lines + 1] = id .. '\t' .. registry
  end
end
local registries = cjson.decode(ARGV[2])
for i = 3, #ARGV do
  local queue = ARGV[i]
  for _, id in ipairs(redis.call('LRANGE', 'rq:queue:' .. queue, 0, -1)) do add(id, 'queued') end
  for _, registry in ipairs(registries) do
    for _, member in ipairs(redis.call('ZRANGE', registry[2] .. queue, 0, -1)) do
      add(string.match(member, '^[^:]+'), registry[1])
    end
  end
end
for _, id in ipairs(redis.call('ZRANGE', ARGV[1], 0, -1)) do add(id, '') end
return table.concat(lines, '\n')
"""

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
    queues: frozenset[str] = frozenset()
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
        # The last sort: ((sort, descending, clock bucket), ordered ids, id -> sort value). It stays valid
        # while no job comes or goes and the rows that changed kept their sort values (progress moved,
        # the order by creation time did not).
        self._sorted: tuple | None = None
        self._updated: set[str] = set()  # rows replaced since the last sort
        self._reshaped = False  # jobs added or removed since the last sort
        self._counts: tuple[dict[str, int], list[str]] | None = None
        self._membership_script = conn.register_script(_MEMBERSHIP_LUA)

    def invalidate(self, job_ids) -> None:
        """Read these jobs again at the next refresh (after acting on them)."""
        self._invalid.update(job_ids)

    def queue_names(self) -> list[str]:
        names = {name.decode() for name in self.conn.smembers(QUEUES_SET)}
        names.update(key.decode().removeprefix(RQ_QUEUE_PREFIX) for key in self.conn.smembers(RQ_QUEUES))
        return sorted(names)

    def _memberships(self) -> dict[str, str | None]:
        """job id -> registry name ('queued' for the queue list), None for ids only in our index."""
        import json

        queues = self.queue_names()
        text = self._membership_script(args=[JOBS_INDEX, json.dumps(_REGISTRIES), *queues]).decode()
        found: dict[str, str | None] = {}
        for line in text.split("\n") if text else ():
            job_id, _, registry = line.partition("\t")
            found[job_id] = registry or None
        return found

    def refresh(self) -> RefreshStats:
        started = time.perf_counter()
        now = self.clock()
        found = self._memberships()
        removed = [job_id for job_id in self.rows if job_id not in found]
        self._reshaped |= bool(removed)
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
        expired = []
        for job_id, row in zip(stale, job_rows(self.conn, stale) if stale else ()):
            if row is None:
                if found[job_id] is None:
                    expired.append(job_id)
                self._gone.add(job_id)
                if self.rows.pop(job_id, None) is not None:
                    changed = self._reshaped = True
                self._search.pop(job_id, None)
                continue
            self._gone.discard(job_id)
            if self.rows.get(job_id) != row:
                self._reshaped |= job_id not in self.rows
                self._updated.add(job_id)
                self.rows[job_id] = row
                self._search[job_id] = search_text(row)
                changed = True
                # Known jobs that moved keep being re-read for a while (their meta may still change).
                moved = job_id in self._registry and self._registry[job_id] != found[job_id]
                if moved or job_id in self._invalid:
                    self._changed_at[job_id] = now
        if expired:
            # rq let these records expire; only our index still named them
            self.conn.zrem(JOBS_INDEX, *expired)
        if changed:
            self._counts = None
        for job_id in stale:
            self._registry[job_id] = found[job_id]
        self._invalid.clear()
        for job_id in [job_id for job_id, at in self._changed_at.items() if now - at >= self.hot_window_s]:
            del self._changed_at[job_id]
        return RefreshStats(len(self.rows), len(stale), len(removed), time.perf_counter() - started, changed)

    def _summary(self) -> tuple[dict[str, int], list[str]]:
        """(jobs by status, kinds present), recomputed only after a refresh changed something."""
        if self._counts is None:
            counts = dict.fromkeys(STATUSES, 0)
            kinds = set()
            for row in self.rows.values():
                counts[row.status] = counts.get(row.status, 0) + 1
                kinds.add(row.kind)
            kinds.discard(None)
            self._counts = (counts, sorted(kinds))
        return self._counts

    def _ordered(self, sort: str, descending: bool, now: float) -> list[str]:
        """Every job id in the requested order."""
        if sort not in SORT_KEYS:
            raise ValueError(f"unknown sort key {sort!r}; use one of: {', '.join(SORT_KEYS)}")
        value = _sort_value(sort, now)
        # Durations of running jobs grow with the clock: re-sort them at most once a second.
        cache_key = (sort, descending, int(now) if sort in ("duration", "eta") else 0)
        if self._sorted is not None and self._sorted[0] == cache_key and not self._reshaped:
            _, ids, values = self._sorted
            if all(value(self.rows[job_id]) == values[job_id] for job_id in self._updated):
                self._updated.clear()
                return ids
        keyed = [(value(row), row.id) for row in self.rows.values()]
        # Rows without a value (no duration yet, no worker...) go last in either direction.
        present = sorted((item for item in keyed if item[0] is not None), reverse=descending)
        missing = sorted(job_id for key, job_id in keyed if key is None)
        ids = [job_id for _, job_id in present] + missing
        self._sorted = (cache_key, ids, {job_id: key for key, job_id in keyed})
        self._updated.clear()
        self._reshaped = False
        return ids

    def query(self, query: JobQuery) -> SortedPage:
        ids = self._ordered(query.sort, query.descending, self.clock())
        text = query.text.strip().lower()
        if query.statuses or query.kinds or query.queues or text:
            rows, search = self.rows, self._search
            ids = [
                job_id
                for job_id in ids
                if (not query.statuses or rows[job_id].status in query.statuses)
                and (not query.kinds or rows[job_id].kind in query.kinds)
                and (not query.queues or rows[job_id].queue in query.queues)
                and (not text or text in search[job_id])
            ]
        limit = max(1, query.limit)
        offset = max(0, min(query.offset, max(0, len(ids) - 1) // limit * limit))
        page = [self.rows[job_id] for job_id in ids[offset : offset + limit]]
        counts, kinds = self._summary()
        return SortedPage(page, len(ids), offset, query.limit, counts, kinds)
