"""Running one generation job inside the work horse: everything around the engine.

1. Validate the spec and the inputs the CLI stored in the job directory.
2. Claim the run (`run_key` := this execution id) and write a 'running' manifest.
3. Let the engine render into a private attempt directory (`.attempt-<n>-<execution>`), so a re-run never
   mixes with a dead run's files.
4. Check the video decodes to the promised frames and size, re-check the claim, and link it into place
   as `video.mp4` (a link never replaces an existing file). Only then is the manifest 'finished'.
Any failure is classified (`worker.job.classify`: bad input, timeout, canceled, OOM, engine error, ...),
written to the job meta, the manifest and the log (`worker.job.record_end`), and re-raised so rq records
the job as failed; except when this run no longer owns the job (its worker died, or a re-run took it
over): then it records nothing, since whatever it saw (an encoder killed under it, a refused commit) is
not the job's outcome.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker import proctree
from worker.engines import get_engine
from worker.job import InputError, JobFailed, JobInputs, classify, record_end
from worker.progress import Reporter, RunTakenOver
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.queue import write_json_atomic
from worldplay_cli.contract.settings import job_file_mode, load_settings, settings_to_dict
from worldplay_cli.contract.specs import Failure, JobSpec, Manifest, Progress, Timings, VideoInfo, run_key

if TYPE_CHECKING:
    from redis import Redis
    from rq.job import Job


# Set in the work horse once its worker process is gone (`WorldplayWorker._die_with_parent`): the job is
# the reaper's to re-queue now, and the errors its teardown causes here are not the job's outcome.
ORPHANED = threading.Event()


TAKEN_OVER = "another run of this job took over (this one was presumed dead)"


def disowned(exc: BaseException | None) -> bool:
    """Did this run stop owning its job, so that `exc` must not be recorded as the job's outcome? Its worker
    died (seen by the horse, or first by the native engine's resident supervisor: kind `worker_lost`), or
    another run took the job over (its claim is gone)."""
    if ORPHANED.is_set() or isinstance(exc, RunTakenOver):
        return True
    return isinstance(exc, JobFailed) and exc.failure.kind == "worker_lost"


def _versions() -> dict[str, str]:
    import numpy
    import redis
    import rq

    import worldplay_cli

    return {
        "worldplay": worldplay_cli.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "rq": rq.__version__,
        "redis-py": redis.__version__,
    }


def _gpu() -> dict | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"cuda_visible_devices": visible} if visible else None


def _owns(conn: Redis, job_id: str, execution_id: str) -> bool:
    owner = conn.get(run_key(job_id))
    return owner is not None and owner.decode() == execution_id


def _commit(conn: Redis, job_id: str, execution_id: str, produced: Path, final: Path) -> None:
    """Put the video in place if this run still owns the job; never replace an existing file."""
    if not _owns(conn, job_id, execution_id):
        raise JobFailed(Failure(kind="worker_lost", message=f"{TAKEN_OVER}; its video was discarded"))
    try:
        os.link(produced, final)
    except FileExistsError:
        raise JobFailed(
            Failure(kind="internal", message=f"{final} already exists; outputs are never overwritten")
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # Filesystems without hard links: claim the name exclusively, then move the file onto the claim.
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(produced, final)
        return
    os.unlink(produced)


def run_generate(job: Job, spec_data: dict) -> dict:
    """The body of the `worker.tasks.generate` task."""
    settings = load_settings()
    conn = job.connection
    marker = os.environ.get(proctree.MARKER_ENV) or f"{job.id}:{os.getpid()}"
    execution_id = marker.split(":", 1)[1]
    directory = Path(settings.output_root) / job.id
    log_file = directory / "log.txt"
    started_at = time.time()

    job.get_meta(refresh=True)
    attempt = JobMeta.start_attempt(job.meta, str(directory), Progress(stage="starting"))
    job.save_meta()
    reporter = Reporter(conn, job, log_file, settings)
    reporter.log(
        f"attempt {attempt} started on worker {job.worker_name} (host {socket.gethostname()}, pid {os.getpid()})"
    )

    spec: JobSpec | None = None
    work_dir: Path | None = None
    manifest: dict | None = None
    try:
        spec = JobSpec.model_validate(spec_data)
        if not directory.is_dir():
            raise InputError(f"job directory {directory} does not exist (is the output root shared with this worker?)")
        inputs = JobInputs(directory, spec)
        inputs.verify()
        conn.set(run_key(job.id), execution_id, ex=settings.queue.failed_ttl_s)
        reporter.execution_id = execution_id
        # This run owns the job now: whatever earlier (dead) runs left behind goes.
        for stale in directory.glob(".attempt-*"):
            shutil.rmtree(stale, ignore_errors=True)
        manifest = {
            "job_id": job.id,
            "attempt": attempt,
            "execution_id": execution_id,
            "queue": job.origin,
            "worker": job.worker_name or "",
            "spec": spec,
            "settings": settings_to_dict(settings),
            "versions": _versions(),
            "host": {"hostname": socket.gethostname(), "pid": os.getpid(), "platform": sys.platform},
            "gpu": _gpu(),
        }
        _write_manifest(directory, manifest, "running", job, started_at, reporter)
        engine = get_engine(spec.engine)
        manifest["engine"] = {"name": spec.engine}
        work_dir = directory / f".attempt-{attempt}-{execution_id[:12]}"
        work_dir.mkdir(mode=stat.S_IMODE(directory.stat().st_mode))
        result = engine.run(spec, inputs, work_dir, reporter)
        manifest["engine"].update(result.info)

        reporter.stage("verify")
        from worker.video import read_video_info

        num_frames, width, height, fps = read_video_info(result.video)
        if (num_frames, width, height) != (spec.frames, spec.width, spec.height):
            raise JobFailed(
                Failure(
                    kind="engine_error",
                    message=f"engine produced {num_frames} frames of {width}x{height}, "
                    f"expected {spec.frames} of {spec.width}x{spec.height}",
                )
            )
        final = directory / "video.mp4"
        size = result.video.stat().st_size
        result.video.chmod(job_file_mode(directory))  # engines write with their umask
        _commit(conn, job.id, execution_id, result.video, final)
        reporter.finish()
        video = VideoInfo(frames=num_frames, width=width, height=height, fps=fps, bytes=size)
        _write_manifest(directory, manifest, "finished", job, started_at, reporter, video=video)
        JobMeta.set_video(job.meta, str(final))
        job.save_meta()
        reporter.log(f"finished: {final} ({num_frames} frames, {width}x{height}, {time.time() - started_at:.1f} s)")
        return {
            "video": str(final),
            "output_dir": str(directory),
            "frames": num_frames,
            "width": width,
            "height": height,
            "fps": fps,
            "duration_s": round(time.time() - started_at, 3),
        }
    except BaseException as exc:
        # However it failed (its attempt directory removed by the re-run, say), a run whose claim is gone
        # does not own the job any more.
        taken_over = not disowned(exc) and reporter.execution_id is not None and not _owns(conn, job.id, execution_id)
        if taken_over or disowned(exc):
            why = (
                "its worker is gone"
                if ORPHANED.is_set()
                else exc.failure.message
                if isinstance(exc, JobFailed)
                else TAKEN_OVER
            )
            reporter.log(f"run {execution_id[:12]} ends without a result: {why}")
            if taken_over:
                raise JobFailed(Failure(kind="worker_lost", message=TAKEN_OVER)) from exc
            raise
        failure = classify(exc, spec)
        status = "stopped" if failure.kind == "canceled" else "failed"
        if manifest is not None:
            _write_manifest(directory, manifest, status, job, started_at, reporter, failure=failure)
        record_end(conn, settings, job, failure, status)
        raise
    finally:
        # Whatever the engine started must not outlive the job.
        proctree.terminate(marker, grace_s=settings.worker.kill_grace_s)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


def _write_manifest(
    directory: Path,
    fields: dict,
    status: str,
    job: Job,
    started_at: float,
    reporter: Reporter,
    video: VideoInfo | None = None,
    failure: Failure | None = None,
) -> None:
    ended = status != "running"
    finished_at = time.time() if ended else None
    timings = Timings(
        enqueued_at=job.enqueued_at.timestamp() if job.enqueued_at else None,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=round(finished_at - started_at, 3) if finished_at else None,
        stages=dict(reporter.stage_times),
    )
    manifest = Manifest(
        status=status,
        timings=timings,
        video=video,
        failure=failure,
        engine=fields.get("engine", {}),
        **{key: value for key, value in fields.items() if key != "engine"},
    )
    write_json_atomic(directory / "manifest.json", manifest.model_dump(mode="json"))
