"""Running one generation job inside the work horse: everything around the engine.

1. Validate the spec and the inputs the CLI stored in the job directory (`worker.job.JobRun`, shared with
   live sessions, does 1, 2 and the failure bookkeeping).
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
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.engines import get_engine
from worker.job import TAKEN_OVER, JobFailed, JobRun
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.settings import job_file_mode
from worldplay_cli.contract.specs import Failure, JobSpec, VideoInfo

if TYPE_CHECKING:
    from rq.job import Job


def _commit(run: JobRun, produced: Path, final: Path) -> None:
    """Put the video in place if this run still owns the job; never replace an existing file."""
    if not run.owns():
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
    run = JobRun(job)
    reporter, directory = run.reporter, run.directory
    spec: JobSpec | None = None
    work_dir: Path | None = None
    try:
        spec = JobSpec.model_validate(spec_data)
        inputs = run.inputs(spec)
        run.claim(spec)
        engine = get_engine(spec.engine)
        work_dir = directory / f".attempt-{run.attempt}-{run.execution_id[:12]}"
        work_dir.mkdir(mode=stat.S_IMODE(directory.stat().st_mode))
        result = engine.run(spec, inputs, work_dir, reporter)
        run.manifest["engine"].update(result.info)

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
        _commit(run, result.video, final)
        reporter.finish()
        video = VideoInfo(frames=num_frames, width=width, height=height, fps=fps, bytes=size)
        run.write_manifest("finished", video=video)
        JobMeta.set_video(job.meta, str(final))
        job.save_meta()
        reporter.log(f"finished: {final} ({num_frames} frames, {width}x{height}, {time.time() - run.started_at:.1f} s)")
        return {
            "video": str(final),
            "output_dir": str(directory),
            "frames": num_frames,
            "width": width,
            "height": height,
            "fps": fps,
            "duration_s": round(time.time() - run.started_at, 3),
        }
    except BaseException as exc:
        run.record_failure(exc, spec)
        raise
    finally:
        run.end_processes()
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
