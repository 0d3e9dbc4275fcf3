"""The rq worker worldplay runs: rq's forking `Worker`, with the parts video jobs need changed.

- Only allowlisted tasks run (`GuardedJob`); a refused job fails with the reason, never retried.
- Every job runs in a work horse (own process group) and everything it starts carries a marker in its
  environment; cancel, timeout and shutdown end the whole tree: SIGTERM, grace, SIGKILL, sweep
  (`worker.proctree`), including processes in their own sessions (torchrun ranks). On Linux the worker
  is a child subreaper, so those are all its descendants (it collects the orphans' exit status itself).
- Heartbeats every `worker.heartbeat_s`; a job's started-registry entry expires `worker.lost_after_s`
  after the last one, and every worker reaps lost jobs of every queue every `worker.reaper_interval_s`.
- The work horse dies with its worker: if the worker process vanishes, the horse ends its tree and exits
  without recording anything (the reaper re-queues the job, or fails it when its retries are used up), so
  a re-queued job never runs twice at once (the fencing in the runner covers frozen processes).
- Meta (`attempt`, `history`) is re-read before rq re-queues a job (rq writes its own, stale, copy of the
  whole job hash), and the attempt that ended is added to the history in the same write.
- A malformed queue entry is set aside (`GuardedQueue`), never the end of the worker.
- SIGTERM/SIGINT: warm shutdown; the running job gets `worker.shutdown_grace_s` to finish, then it is
  stopped and re-queued at the front without using up a retry. A second signal does that at once.
- Retries only for failures that are not the job's fault (worker lost, work horse killed by the OS).
"""

from __future__ import annotations

import _thread
import gc
import os
import shutil
import signal
import threading
import time
from datetime import timedelta

import redis
from rq.exceptions import DeserializationError, StopRequested
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import Worker

from worker import proctree, tasks  # noqa: F401 (tasks: imported once here, not in every forked horse)
from worker.job import ORPHANED, disowned, record_end
from worker.progress import JobCanceled
from worldplay_cli.contract.queue import (
    SERIALIZER,
    GuardedJob,
    GuardedQueue,
    TaskRefused,
    append_log,
    end_manifest,
    note_attempt,
    reap,
    rq_queue,
)
from worldplay_cli.contract.settings import Settings
from worldplay_cli.contract.specs import STOPPED_SET, Failure, cancel_key

_PARENT_POLL_S = 0.5
# Sent to a work horse by the kernel when its worker process ends (`proctree.signal_on_parent_death`):
# a real-time signal nothing else in a horse uses.
_ORPHAN_SIGNAL = signal.SIGRTMIN
MAINTENANCE_INTERVAL_S = 30
# How long the command listener (cancel/stop messages) waits for a message or a subscription per turn.
# rq uses 60 s, and redis-py joins the listener without a bound at shutdown: when the listener saw our
# UNSUBSCRIBE answered before it saw the stop flag, it waited out the full 60 s for a new subscription
# and `worldplay worker` took up to a minute to stop. One second bounds that wait.
_PUBSUB_POLL_S = 1.0


class WorldplayWorker(Worker):
    job_class = GuardedJob

    def __init__(
        self, queue_name: str, connection: redis.Redis, settings: Settings, gpus: tuple[int, ...] = (), **kwargs
    ):
        self.settings = settings
        self.gpus = gpus
        liveness = settings.worker
        super().__init__(
            [rq_queue(connection, queue_name)],
            connection=connection,
            serializer=SERIALIZER,
            job_class=GuardedJob,
            queue_class=GuardedQueue,
            job_monitoring_interval=liveness.heartbeat_s,
            # rq blocks on the queue for worker_ttl - 15 s; that is also how often an idle worker reaps.
            worker_ttl=liveness.reaper_interval_s + 15,
            # rq's own maintenance (default every 10 min) also recovers jobs lost between dequeue and start.
            maintenance_interval=MAINTENANCE_INTERVAL_S,
            default_result_ttl=settings.queue.finished_ttl_s,
            **kwargs,
        )
        self._marker: str | None = None
        self._kill_done = threading.Event()
        self._kill_done.set()
        self._requeue_job_id: str | None = None
        self._horse_signal: int | None = None
        self._last_exception: BaseException | None = None
        self._last_reap = 0.0
        self._shutdown_timer: threading.Timer | None = None
        self._in_work_loop = False
        self._parent_pid = 0

    # --- liveness -----------------------------------------------------------------------------------

    def bootstrap(self, *args, **kwargs):
        # rq registers the worker before installing its signal handlers; a supervisor that saw the
        # registration and sent SIGTERM in that gap would kill us outright instead of stopping us warmly.
        self._install_signal_handlers()
        if not proctree.become_subreaper():
            self.log.info("Worker %s: not a subreaper here; ending a job's processes scans every process", self.name)
        super().bootstrap(*args, **kwargs)
        # What is alive now (modules, rq, pydantic's schemas) lives as long as the worker: out of the
        # collector's sight, so a work horse's collections never walk it, and never copy the pages it
        # shares with the worker (a fork is cheap only while its pages stay shared).
        gc.collect()
        gc.freeze()

    def check_for_suspension(self, burst: bool):
        # The first call of every turn of rq's work loop, inside the `try` that catches StopRequested.
        self._in_work_loop = True
        super().check_for_suspension(burst)

    def subscribe(self):
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=_PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # rq adds a fixed 60 s; ours is the configured bound, refreshed every heartbeat until the horse is gone.
        return self.settings.worker.lost_after_s

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if not self.is_horse:
            self._maybe_reap()

    def _reap_orphans(self) -> None:
        # In the main thread only, the one that waits for the horse: never the horse's exit status.
        if threading.current_thread() is threading.main_thread():
            proctree.reap_orphans(spare=self.horse_pid)

    def _maybe_reap(self) -> None:
        if time.monotonic() - self._last_reap < self.settings.worker.reaper_interval_s:
            return
        self._last_reap = time.monotonic()
        # Orphans that ended during a long job; those of a job that ended are collected right after it.
        self._reap_orphans()
        try:
            reap(self.connection, self.settings)
        except StopRequested:  # SIGTERM while reaping: rq's way of leaving the idle loop, not a failure
            raise
        except Exception:  # the reaper must never take the worker down; the next beat tries again
            self.log.exception("Worker %s: reaping lost jobs failed", self.name)

    def clean_registries(self):
        # Our reaper first, so lost jobs get their reason recorded before rq's generic cleanup sees them.
        reap(self.connection, self.settings, force=True)
        super().clean_registries()

    def serialize(self) -> dict:
        data = super().serialize()
        data["gpus"] = ",".join(str(gpu) for gpu in self.gpus)
        return data

    # --- running a job ------------------------------------------------------------------------------

    def fork_work_horse(self, job: Job, queue: Queue):
        execution = self.execution
        self._marker = f"{job.id}:{execution.id if execution else os.getpid()}"
        self._horse_signal = None
        self._last_exception = None
        os.environ[proctree.MARKER_ENV] = self._marker
        try:
            super().fork_work_horse(job, queue)
        finally:
            os.environ.pop(proctree.MARKER_ENV, None)

    def main_work_horse(self, job: Job, queue: Queue):
        self._parent_pid = os.getppid()
        # Linux tells the horse when its worker is gone (a signal, nothing to run per job); elsewhere a
        # thread polls. A bare thread: `threading.Thread.start` waits until the new thread has run, a wait
        # for the scheduler in every job. It ends with the horse (rq leaves it with os._exit).
        signal.signal(_ORPHAN_SIGNAL, self._orphaned)
        if proctree.signal_on_parent_death(_ORPHAN_SIGNAL):
            if os.getppid() != self._parent_pid:  # gone before the kernel was asked
                self._orphaned()
        else:
            _thread.start_new_thread(self._die_with_parent, (self._parent_pid,))
        super().main_work_horse(job, queue)

    def _die_with_parent(self, parent_pid: int) -> None:
        """In the horse, where the kernel cannot signal it: poll for the worker process."""
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent_pid:
                self._end_orphan()

    def _orphaned(self, *_signal) -> None:
        # The tree is ended beside the job's own code, which goes on meanwhile: it sees its processes die,
        # fails, and cleans up after itself (its attempt directory) without recording an outcome.
        _thread.start_new_thread(self._end_orphan, ())

    def _end_orphan(self) -> None:
        """In the horse, once its worker process is gone: nobody will report this run; end it."""
        # Before ending the tree: the engine fails as its processes die (an encoder's broken pipe), and
        # that failure must not be recorded as the job's, or the job would not be re-queued.
        ORPHANED.set()
        marker = os.environ.get(proctree.MARKER_ENV)
        proctree.terminate(marker, grace_s=self.settings.worker.kill_grace_s)
        if marker:
            # the run's half-written outputs: its own code may not get to remove them before the exit below
            self._remove_attempt_dirs(marker.split(":", 1)[0], marker)
        os._exit(1)

    def execute_job(self, job: Job, queue: Queue):
        try:
            super().execute_job(job, queue)
        finally:
            # A horse that exited on its own may leave daemonized children behind.
            if self._marker:
                proctree.terminate(self._marker, grace_s=self.settings.worker.kill_grace_s)
            self._marker = None
            self._reap_orphans()

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL):
        """Cancel, timeout, shutdown: end the horse's process group and every marked process."""
        self._kill_done.clear()
        try:
            pgids: tuple[int, ...] = ()
            if self.horse_pid:
                try:
                    pgids = (os.getpgid(self.horse_pid),)
                except ProcessLookupError:
                    pass
            count = proctree.terminate(self._marker, pgids, grace_s=self.settings.worker.kill_grace_s)
            self.log.info("Worker %s: ended %d process(es) of job run %s", self.name, count, self._marker)
        finally:
            self._kill_done.set()

    # --- failures -----------------------------------------------------------------------------------

    def handle_exception(self, job: Job, *exc_info):
        self._last_exception = exc_info[1]
        super().handle_exception(job, *exc_info)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        if ret_val is not None and os.WIFSIGNALED(ret_val):
            self._horse_signal = os.WTERMSIG(ret_val)
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string="", execution=None):
        if self.is_horse and disowned(self._last_exception):
            if os.getppid() != self._parent_pid:
                threading.Event().wait()  # never set: the watcher ends this process once the job's tree is gone
            self.log.warning("Worker %s: job %s was taken over by another run; leaving it alone", self.name, job.id)
            return
        if not self.is_horse:
            # Report the job ended only once its processes are gone.
            self._kill_done.wait(timeout=self.settings.worker.kill_grace_s + 15)
            if self._marker:
                proctree.terminate(self._marker, grace_s=0)
                self._remove_attempt_dirs(job.id, self._marker)
        if self.is_horse and isinstance(self._last_exception, JobCanceled):
            # The engine honoured the cancel flag before the worker's kill arrived: same outcome.
            self._stopped_job_id = job.id
        stopped = self._stopped_job_id == job.id
        requeue = job.id == self._requeue_job_id
        failure, transient, recorded = self._classify(job, exc_string, stopped)
        if requeue:
            # Shutdown is not the job's fault: put it back at the front without using up a retry.
            job.retries_left = (job.retries_left or 0) + 1
            job.enqueue_at_front_on_retry = True
            self._requeue_job_id = None
            failure = Failure(kind="worker_lost", message="worker shutting down")
        elif not transient:
            job.retries_left = 0
        retry = job.should_retry and not stopped
        if retry:
            # rq re-queues by saving its copy of the job hash, meta included; ours was read at dequeue and
            # lacks what the run wrote (attempt). Re-read it and add this attempt, in that same write.
            job.get_meta(refresh=True)
            note_attempt(job, failure)
        if not recorded and not retry:
            # Readers wait for rq's status: the manifest says how the run ended before rq says it ended.
            end_manifest(self.settings.output_root / job.id, "stopped" if stopped else "failed", failure)
        if stopped:
            # rq counts a job stopped on request as a failure of this worker; the user's cancel is not one
            # (`worldplay jobs workers` and the dashboard would blame a healthy worker).
            self.increment_failed_job_count = lambda pipeline=None: None
        try:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        finally:
            self.__dict__.pop("increment_failed_job_count", None)
        if stopped:
            with self.connection.pipeline() as pipe:
                pipe.delete(cancel_key(job.id))
                pipe.sadd(STOPPED_SET, job.id)
                pipe.execute()
        if recorded:
            return
        if retry:
            log_file = self.settings.output_root / job.id / "log.txt"
            append_log(
                self.connection, self.settings, job.id, f"attempt ended ({failure.message}); re-queued", log_file
            )
        else:
            record_end(self.connection, self.settings, job, failure, "stopped" if stopped else "failed")

    def _remove_attempt_dirs(self, job_id: str, marker: str) -> None:
        """The run's private attempt directory (a half-written video): the runner removes it when the job
        ends by itself, but a killed horse (cancel, timeout, shutdown, OOM killer) never gets to."""
        execution_id = marker.split(":", 1)[1]
        for attempt_dir in (self.settings.output_root / job_id).glob(f".attempt-*-{execution_id[:12]}"):
            shutil.rmtree(attempt_dir, ignore_errors=True)

    def _classify(self, job: Job, exc_string: str, stopped: bool) -> tuple[Failure, bool, bool]:
        """(failure, transient?, already recorded by the runner?)"""
        exc = self._last_exception
        if self.is_horse:
            if isinstance(exc, TaskRefused):
                return Failure(kind="refused", message=str(exc), hint="only worldplay can enqueue jobs"), False, False
            if isinstance(exc, DeserializationError):
                message = "job payload is not JSON (worldplay workers accept JSON-serialized jobs only)"
                return Failure(kind="refused", message=message), False, False
            # The runner has classified and recorded anything raised inside a task.
            return (
                Failure(kind="engine_error", message=exc_string.strip().splitlines()[-1] if exc_string else "failed"),
                False,
                True,
            )
        if stopped:
            recorded = (job.get_meta(refresh=True).get("failure") or {}).get("kind") == "canceled"
            return Failure(kind="canceled", message="canceled by the user"), False, recorded
        if "stuck in intermediate queue" in exc_string:
            return (
                Failure(kind="worker_lost", message="worker died between taking the job and starting it"),
                True,
                False,
            )
        working = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        if job.timeout and job.timeout > 0 and working > job.timeout:
            message = f"job exceeded its timeout of {job.timeout} s and did not stop; killed"
            return Failure(kind="timeout", message=message, hint="raise --timeout (or job_timeout_s)"), False, False
        signame = signal.Signals(self._horse_signal).name if self._horse_signal else "unknown cause"
        hint = (
            "SIGKILL from the OS often means the host ran out of memory"
            if self._horse_signal == signal.SIGKILL
            else None
        )
        return Failure(kind="engine_error", message=f"work horse died ({signame})", hint=hint), True, False

    # --- shutdown -----------------------------------------------------------------------------------

    def request_stop(self, signum, frame):
        if not self._in_work_loop:
            # Still starting up (registering, starting the command listener's thread): rq's StopRequested
            # would surface wherever the signal lands, outside any handler, and end the worker with a
            # traceback or hang it in a half-started thread. Note the request; the loop's first turn stops.
            self._stop_requested = True
            self._shutdown_requested_date = now()
            return
        super().request_stop(signum, frame)  # raises StopRequested when idle
        job_id = self.get_current_job_id()
        if self.horse_pid and job_id and self._shutdown_timer is None:
            grace = self.settings.worker.shutdown_grace_s
            self.log.info("Worker %s: job %s has %.0f s to finish before it is re-queued", self.name, job_id, grace)
            self._shutdown_timer = threading.Timer(grace, self._preempt, args=(job_id,))
            self._shutdown_timer.daemon = True
            self._shutdown_timer.start()

    def _preempt(self, job_id: str) -> None:
        if self.horse_pid and self.get_current_job_id() == job_id:
            self._requeue_job_id = job_id
            self.kill_horse()

    def request_force_stop(self, signum, frame):
        if self._shutdown_requested_date and now() - self._shutdown_requested_date < timedelta(seconds=1):
            return
        job_id = self.get_current_job_id()
        if self.horse_pid and job_id:
            self._requeue_job_id = job_id
        super().request_force_stop(signum, frame)

    def teardown(self):
        if not self.is_horse and self._requeue_job_id:
            self._requeue_abandoned(self._requeue_job_id)
        super().teardown()

    def _requeue_abandoned(self, job_id: str) -> None:
        """After a cold shutdown killed the horse: hand the job back instead of leaving it to the reaper."""
        job = GuardedJob.fetch(job_id, connection=self.connection, serializer=SERIALIZER)
        if job.get_status() != JobStatus.STARTED:
            return
        self.handle_job_failure(
            job, rq_queue(self.connection, job.origin), exc_string="worker stopped", execution=self.execution
        )
