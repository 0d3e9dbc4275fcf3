"""Running one generation job inside the work horse: everything around the engine.

1. Validate the spec and the inputs the CLI stored in the job directory (`worker.job.JobRun`, shared with
   live sessions, does 1, 2 and the failure bookkeeping).
2. Claim the run (`run_key` := this execution id) and write a 'running' manifest.
3. Let the engine render into a private attempt directory (`.attempt-<n>-<execution>`), so a re-run never
   mixes with a dead run's files.
4. With `hud`, draw the trajectory's keys over a copy of the video (`video_hud.mp4`) unless the engine
   wrote one; video.mp4 itself is never overlaid.
5. Check every video the spec promises (`JobSpec.videos`: video.mp4, and video_480p.mp4 / video_hud.mp4
   when asked) decodes to the promised frames and size, re-check the claim, and link them into place
   (a link never replaces an existing file). Only then is the manifest 'finished'.
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
from worker.hud import write_trajectory_hud
from worker.job import TAKEN_OVER, JobFailed, JobRun
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.settings import job_file_mode
from worldplay_cli.contract.specs import HUD_VIDEO_FILE, VIDEO_FILE, Failure, JobSpec, VideoInfo

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


def verify_video(path: Path, spec: JobSpec, name: str) -> VideoInfo:
    """The facts of one of the job's videos, which must decode to the spec's frames at its promised size."""
    from worker.video import read_video_info

    if not path.is_file():
        raise JobFailed(Failure(kind="engine_error", message=f"the engine wrote no {name}"))
    num_frames, width, height, fps = read_video_info(path)
    expected = (spec.frames, *spec.videos()[name])
    if (num_frames, width, height) != expected:
        raise JobFailed(
            Failure(
                kind="engine_error",
                message=f"engine produced {num_frames} frames of {width}x{height} for {name}, "
                f"expected {expected[0]} of {expected[1]}x{expected[2]}",
            )
        )
    return VideoInfo(file=name, frames=num_frames, width=width, height=height, fps=fps, bytes=path.stat().st_size)


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
        produced = {VIDEO_FILE: result.video}
        produced.update({name: work_dir / name for name in spec.videos() if name != VIDEO_FILE})
        if spec.hud and not produced[HUD_VIDEO_FILE].exists():
            reporter.stage("hud")
            write_trajectory_hud(result.video, inputs.trajectory_path, produced[HUD_VIDEO_FILE], spec.fps)

        reporter.stage("verify")
        videos = {name: verify_video(path, spec, name) for name, path in produced.items()}
        for name, path in produced.items():
            path.chmod(job_file_mode(directory))  # engines write with their umask
            _commit(run, path, directory / name)
        final = directory / VIDEO_FILE
        reporter.finish()
        video = videos.pop(VIDEO_FILE)
        num_frames, width, height, fps = video.frames, video.width, video.height, video.fps
        run.write_manifest("finished", video=video, videos=list(videos.values()))
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
