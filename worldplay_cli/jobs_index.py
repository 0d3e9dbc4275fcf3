"""Listings of jobs: one page at a time for `worldplay jobs list` (`newest_page`, below), and a fast,
incremental view of every job for listings that refresh and search (the dashboard, `jobs list --search`).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET, STOPPED_SET
from worldplay_cli.rows import ENDED, STATUSES, JobRow, job_rows

if TYPE_CHECKING:
    from redis import Redis

RQ_QUEUES = "rq:queues"
RQ_QUEUE_PREFIX = "rq:queue:"
# (registry name, key prefix, whether its scores are the jobs' expiry times); a job's registry is its
# status as far as change detection goes. rq files finished and failed jobs until their records expire
# (and removes them lazily); the other registries are scored otherwise (heartbeat, creation, schedule).
_REGISTRIES = (
    ("started", "rq:wip:", False),
    ("finished", "rq:finished:", True),
    ("failed", "rq:failed:", True),
    ("canceled", "rq:canceled:", False),
    ("deferred", "rq:deferred:", False),
    ("scheduled", "rq:scheduled:", False),
)

# Every job id listed anywhere: in a queue, in a registry of a queue, in our index. `visit(id, registry)`
# is called once per id ('' for ids only our index lists). ARGV: index key, registries (JSON), queues...
# Started entries are `<job id>:<execution id>`; job ids never contain ':'.
_EACH_JOB_LUA = r"""
local function each_job(visit)
  local seen = {}
  local function add(id, registry)
    if not seen[id] then
      seen[id] = true
      visit(id, registry)
    end
  end
  local registries = cjson.decode(ARGV[2])
  for i = FIRST_QUEUE, #ARGV do
    local queue = ARGV[i]
    for _, id in ipairs(redis.call('LRANGE', 'rq:queue:' .. queue, 0, -1)) do add(id, 'queued') end
    for _, registry in ipairs(registries) do
      for _, member in ipairs(redis.call('ZRANGE', registry[2] .. queue, 0, -1)) do
        add(string.match(member, '^[^:]+'), registry[1])
      end
    end
  end
  for _, id in ipairs(redis.call('ZRANGE', ARGV[1], 0, -1)) do add(id, '') end
end
"""

# Every job id with the registry it is in, as ONE string of "id\tregistry" lines: a single bulk reply
# parses in microseconds, 20,000 array items take tens of ms.
_MEMBERSHIP_LUA = (
    "local FIRST_QUEUE = 3\n"
    + _EACH_JOB_LUA
    + r"""
local lines = {}
each_job(function(id, registry) lines[#lines + 1] = id .. '\t' .. registry end)
return table.concat(lines, '\n')
"""
)

# One page of jobs, newest first, for a one-shot listing, at a cost that does not grow with the number
# of jobs: the order is the jobs index's (rq's creation time); the counts by status are the sizes of rq's
# queue lists and registries (finished and failed entries count while their expiry score lies ahead, as
# their job records do), with the jobs that ended stopped (`STOPPED_SET`, kept small) told apart from the
# failed ones they are filed with. A status or queue filter gathers the matching registry members inside
# Redis (set operations in C) and keeps those in the index. Ids on the page whose record expired are
# dropped from the index, as `JobsIndex.refresh` does. ARGV: index, stopped set, registries (JSON:
# [name, key prefix, scored by expiry]), statuses wanted (JSON list, empty: all), queue wanted ('': all),
# offset, limit, now, scratch key prefix, queues... Returns {offset, matched, counts (JSON), ids...}.
_PAGE_LUA = r"""
local index, stopped_set, scratch = ARGV[1], ARGV[2], ARGV[9]
local registries = cjson.decode(ARGV[3])
local wanted = {}
for _, status in ipairs(cjson.decode(ARGV[4])) do wanted[status] = true end
local any_status, queue_wanted, now = next(wanted) == nil, ARGV[5], ARGV[8]
local queues = {}
for i = 10, #ARGV do queues[#queues + 1] = ARGV[i] end

local function job_id(member) return string.match(member, '^[^:]+') end
local function alive(score) return score and (score == 'inf' or tonumber(score) > tonumber(now)) end

-- The jobs that ended stopped, by queue (one retried or expired since leaves the set).
local stopped, stopped_in = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', stopped_set)) do
  local fields = redis.call('HMGET', 'rq:job:' .. id, 'status', 'origin')
  if fields[1] == 'stopped' and alive(redis.call('ZSCORE', 'rq:failed:' .. fields[2], id)) then
    stopped[#stopped + 1] = id
    stopped_in[fields[2]] = stopped_in[fields[2]] or {}
    table.insert(stopped_in[fields[2]], id)
  else
    redis.call('SREM', stopped_set, id)
  end
end

local function running(queue)
  local ids, seen = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', 'rq:wip:' .. queue, 0, -1)) do
    local id = job_id(member)
    if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
  end
  return ids
end
local function waiting(queue)
  local ids = redis.call('LRANGE', 'rq:queue:' .. queue, 0, -1)
  for _, id in ipairs(redis.call('LRANGE', 'rq:queue:' .. queue .. ':intermediate', 0, -1)) do ids[#ids + 1] = id end
  return ids
end

local counts = {}
local function add(status, count) counts[status] = (counts[status] or 0) + count end
for _, queue in ipairs(queues) do
  add('queued', redis.call('LLEN', 'rq:queue:' .. queue) + redis.call('LLEN', 'rq:queue:' .. queue .. ':intermediate'))
  for _, registry in ipairs(registries) do
    local key = registry[2] .. queue
    if registry[1] == 'started' then
      add('started', #running(queue))
    elseif registry[3] then
      add(registry[1], redis.call('ZCOUNT', key, '(' .. now, '+inf'))
    else
      add(registry[1], redis.call('ZCARD', key))
    end
  end
  add('stopped', #(stopped_in[queue] or {}))
  add('failed', -#(stopped_in[queue] or {}))
end
local total = 0
for _, count in pairs(counts) do total = total + count end

local limit = math.max(1, tonumber(ARGV[7]))
local function clamp(matched)
  return math.max(0, math.min(tonumber(ARGV[6]), math.floor(math.max(0, matched - 1) / limit) * limit))
end
local page = {}

if any_status and queue_wanted == '' then
  -- Newest first straight from the index, dropping the ids whose record expired on the way down to the
  -- page (a page costs its depth, never the number of jobs).
  local offset = clamp(total)
  local rank, skipped = 0, 0
  while #page < limit do
    local ids = redis.call('ZREVRANGE', index, rank, rank + 99)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', 'rq:job:' .. id) == 0 then
        redis.call('ZREM', index, id)
      else
        rank = rank + 1
        if skipped < offset then skipped = skipped + 1 elseif #page < limit then page[#page + 1] = id end
      end
    end
  end
  return {offset, total, cjson.encode(counts), unpack(page)}
end

-- A filter: the members of the wanted registries, alive, that the index holds, ordered by its scores.
local by_expiry, plain, matches = scratch .. 'expiry', scratch .. 'plain', scratch .. 'matches'
redis.call('DEL', by_expiry, plain, matches)
local function put(key, ids)
  for i = 1, #ids, 1000 do
    local pairs_ = {}
    for j = i, math.min(i + 999, #ids) do pairs_[#pairs_ + 1] = 0; pairs_[#pairs_ + 1] = ids[j] end
    redis.call('ZADD', key, unpack(pairs_))
  end
end
local function merge(into, key, weight)
  redis.call('ZUNIONSTORE', into, 2, into, key, 'WEIGHTS', 1, weight, 'AGGREGATE', 'MAX')
end
local wants_failed = any_status or wanted['failed']
for _, queue in ipairs(queues) do
  if queue_wanted == '' or queue == queue_wanted then
    if any_status or wanted['queued'] then put(plain, waiting(queue)) end
    if any_status or wanted['started'] then put(plain, running(queue)) end
    for _, registry in ipairs(registries) do
      local name = registry[1]
      if name ~= 'started' and (any_status or wanted[name]) then
        if registry[3] then merge(by_expiry, registry[2] .. queue, 1) else merge(plain, registry[2] .. queue, 0) end
      end
    end
    -- the stopped jobs are in the failed registry: gathered with it, or alone
    if wanted['stopped'] and not wants_failed then put(plain, stopped_in[queue] or {}) end
  end
end
redis.call('ZREMRANGEBYSCORE', by_expiry, '-inf', now)
redis.call('ZUNIONSTORE', matches, 2, by_expiry, plain, 'WEIGHTS', 0, 0)
if wanted['failed'] and not wanted['stopped'] then
  for _, id in ipairs(stopped) do redis.call('ZREM', matches, id) end
end
redis.call('ZINTERSTORE', matches, 2, matches, index, 'WEIGHTS', 0, 1)
local matched = redis.call('ZCARD', matches)
local offset = clamp(matched)
page = redis.call('ZREVRANGE', matches, offset, offset + limit - 1)
redis.call('DEL', by_expiry, plain, matches)
return {offset, matched, cjson.encode(counts), unpack(page)}
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
    parts = (row.id, row.prompt, row.engine, row.variant, row.worker, row.queue, row.output_name, row.batch, failure)
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
    # Jobs of one batch together (in the order of each batch's first job), each batch's jobs in the sort
    # order; jobs of no batch are one more group.
    group_batches: bool = False


@dataclass
class SortedPage:
    rows: list[JobRow]
    matched: int  # rows matching the filter (all pages)
    offset: int
    limit: int
    counts: dict[str, int]  # every job in Redis, by status (before filtering)
    kinds: list[str]
    # With `JobQuery.group_batches`: the matching jobs of each batch on the page, by status ("" : no batch).
    batches: dict[str, dict[str, int]] = field(default_factory=dict)

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
        "created": lambda row: row.created_at,
        "queue": lambda row: row.queue,
    }
    return getters[name]


def newest_page(
    conn: Redis, statuses: frozenset[str] = frozenset(), queue: str | None = None, offset: int = 0, limit: int = 50
) -> SortedPage:
    """One page of jobs, newest first (by creation), filtered by status and queue, with every job counted by
    status: what `JobsIndex` answers for a `JobQuery` without text, for the jobs in the index, at the cost
    of the page's rows however many jobs there are (a filter adds set operations inside Redis)."""
    import json

    reply = conn.register_script(_PAGE_LUA)(
        args=[
            JOBS_INDEX,
            STOPPED_SET,
            json.dumps(_REGISTRIES),
            json.dumps(sorted(statuses)),
            queue or "",
            offset,
            limit,
            repr(time.time()),
            "worldplay:scratch:page:",
            *queue_names(conn),
        ]
    )
    page_offset, matched, counts_json, ids = int(reply[0]), int(reply[1]), reply[2], [i.decode() for i in reply[3:]]
    counts = dict.fromkeys(STATUSES, 0)
    # cjson encodes an empty table as an object, a table of counts as one too
    counts.update(json.loads(counts_json))
    rows = [row for row in job_rows(conn, ids) if row is not None]
    kinds = sorted({row.kind for row in rows if row.kind})
    return SortedPage(rows, matched, page_offset, limit, counts, kinds)


def reap_pending(conn: Redis) -> bool:
    """Whether `contract.queue.reap` has anything to look at in any of our queues: a started-registry entry
    past its heartbeat expiry (a lost job), a job a worker took off the queue without starting it (the
    queue's intermediate list), or a deferred job (whose parent may have failed). Readers ask this first
    and import rq and the reaper only then: nothing to reap is the common case, and importing rq is a sixth
    of `jobs list`'s start-up. The keys are rq's (tests/test_jobs_page.py checks them against rq's own)."""
    queues = [name.decode() for name in conn.smembers(QUEUES_SET)]
    if not queues:
        return False
    registry = {name: prefix for name, prefix, _ in _REGISTRIES}
    cutoff = time.time()
    with conn.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zcount(registry["started"] + queue, 0, cutoff)  # what `reap` reads as expired
            pipe.llen(f"{RQ_QUEUE_PREFIX}{queue}:intermediate")
            pipe.zcard(registry["deferred"] + queue)
        return any(pipe.execute())


def queue_names(conn: Redis) -> list[str]:
    """Our queues and rq's."""
    names = {name.decode() for name in conn.smembers(QUEUES_SET)}
    names.update(key.decode().removeprefix(RQ_QUEUE_PREFIX) for key in conn.smembers(RQ_QUEUES))
    return sorted(names)


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
        return queue_names(self.conn)

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
        batches: dict[str, dict[str, int]] = {}
        if query.group_batches:
            ids, batches = self._grouped(ids)
        limit = max(1, query.limit)
        offset = max(0, min(query.offset, max(0, len(ids) - 1) // limit * limit))
        page = [self.rows[job_id] for job_id in ids[offset : offset + limit]]
        counts, kinds = self._summary()
        on_page = {row.batch or "" for row in page}
        batches = {batch: by_status for batch, by_status in batches.items() if batch in on_page}
        return SortedPage(page, len(ids), offset, query.limit, counts, kinds, batches)

    def _grouped(self, ids: list[str]) -> tuple[list[str], dict[str, dict[str, int]]]:
        """`ids` with each batch's jobs together (a stable sort keeps the order within a batch), and the
        jobs of each batch by status."""
        rank: dict[str, int] = {}
        batches: dict[str, dict[str, int]] = {}
        for job_id in ids:
            row = self.rows[job_id]
            batch = row.batch or ""
            rank.setdefault(batch, len(rank))
            by_status = batches.setdefault(batch, {})
            by_status[row.status] = by_status.get(row.status, 0) + 1
        return sorted(ids, key=lambda job_id: rank[self.rows[job_id].batch or ""]), batches
