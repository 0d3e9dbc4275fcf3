"""What a running job tells the world: progress in `job.meta`, log lines in log.txt and a Redis stream.

Engines call `stage()`, `update()` and `log()`; the reporter throttles Redis writes (a progress bar does
not need more than a few updates per second) and checks the cooperative cancel flag on every update, so
an engine stops at the next step boundary instead of waiting to be killed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.queue import append_log
from worldplay_cli.contract.specs import Progress, cancel_key, run_key

if TYPE_CHECKING:
    from redis import Redis
    from rq.job import Job

    from worldplay_cli.contract.settings import Settings

_META_INTERVAL_S = 0.25
_CANCEL_INTERVAL_S = 0.5
_MIN_FRACTION_FOR_ETA = 0.02


# Once a run has claimed its job, its meta writes go through only while the claim is still its own: a run
# presumed dead that wakes up (frozen host, partition) must not overwrite the meta of the job's re-run.
_SAVE_META_IF_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'meta', ARGV[2])
return 1
"""


class JobCanceled(Exception):
    """The user asked to cancel; raised from `Reporter.update()` at the next step boundary."""


class RunTakenOver(Exception):
    """This run no longer owns its job (reaped as lost, or re-run elsewhere); raised when it writes progress."""


class Reporter:
    def __init__(self, conn: Redis, job: Job, log_file: Path, settings: Settings):
        self.conn = conn
        self.job = job
        self.log_file = log_file
        self.settings = settings
        self.started = time.monotonic()
        self.stage_times: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self._stage: str | None = None
        self._stage_started = self.started
        self._done_weight = 0.0
        self._last_meta = 0.0
        self._last_cancel_check = 0.0
        self.fraction = 0.0
        self.execution_id: str | None = None  # set by the runner once this run has claimed the job

    def plan(self, weights: dict[str, float]) -> None:
        """Declare the stages ahead and their share of the work, so the ETA covers the whole job."""
        total = sum(weights.values())
        self._weights = {name: weight / total for name, weight in weights.items()}

    def stage(self, name: str) -> None:
        self._close_stage()
        self._stage = name
        self._stage_started = time.monotonic()
        self.log(f"stage: {name}")
        self._publish(Progress(stage=name, fraction=self.fraction, eta_s=self._eta()), force=True)

    def update(
        self, step: int, total: int | None = None, chunk: int | None = None, num_chunks: int | None = None
    ) -> None:
        """Step `step` of `total` of the current stage is done (and chunk `chunk` of `num_chunks`)."""
        self.check_cancel()
        if total:
            stage_share = self._weights.get(self._stage or "", 0.0) if self._weights else 1.0
            self.fraction = min(1.0, self._done_weight + stage_share * step / total)
        progress = Progress(
            stage=self._stage or "running",
            step=step,
            total=total,
            chunk=chunk,
            num_chunks=num_chunks,
            fraction=self.fraction,
            eta_s=self._eta(),
        )
        self._publish(progress, force=bool(total) and step >= total)

    def log(self, message: str) -> None:
        append_log(self.conn, self.settings, self.job.id, message, self.log_file)

    def check_cancel(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < _CANCEL_INTERVAL_S:
            return
        self._last_cancel_check = now
        if self.conn.exists(cancel_key(self.job.id)):
            raise JobCanceled("canceled by the user")

    def finish(self) -> None:
        self._close_stage()
        self.fraction = 1.0
        self._publish(Progress(stage="done", fraction=1.0, eta_s=0.0), force=True)

    def _close_stage(self) -> None:
        if self._stage is None:
            return
        self.stage_times[self._stage] = round(time.monotonic() - self._stage_started, 3)
        if self._weights:
            self._done_weight = min(1.0, self._done_weight + self._weights.get(self._stage, 0.0))
            self.fraction = self._done_weight
        self._stage = None

    def _eta(self) -> float | None:
        if self.fraction < _MIN_FRACTION_FOR_ETA:
            return None
        elapsed = time.monotonic() - self.started
        return round(elapsed * (1.0 - self.fraction) / self.fraction, 1)

    def _publish(self, progress: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_meta < _META_INTERVAL_S:
            return
        self._last_meta = now
        JobMeta.set_progress(self.job.meta, progress)
        self.save_meta()

    def save_meta(self) -> None:
        """Write `job.meta` as it is now (once the run has claimed its job: only while the claim is its own)."""
        if self.execution_id is None:
            self.job.save_meta()
            return
        meta = self.job.serializer.dumps(self.job.meta)
        if not self.conn.eval(_SAVE_META_IF_OWNER, 2, run_key(self.job.id), self.job.key, self.execution_id, meta):
            raise RunTakenOver("another run of this job took over (this one was presumed dead)")
