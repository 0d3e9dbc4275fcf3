"""What `worldplay eval` evaluates: a job, a job directory or a video file, with which trajectory, written where."""

from __future__ import annotations

from pathlib import Path

from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.specs import VIDEO_FILE

TRAJECTORY_FILE = "trajectory.json"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def _job_directory(target: str, config, redis_url, output_root) -> Path:
    from worldplay_cli import jobs
    from worldplay_cli.contract.queue import job_dir
    from worldplay_cli.runtime import Runtime

    runtime = Runtime(config, redis_url, output_root)
    return job_dir(runtime.settings, jobs.resolve_job_id(runtime.conn, target))


def evaluate_target(
    target: str,
    trajectory: str | None,
    reference: Path | None,
    output: Path | None,
    chunk_latents: int,
    stride: int,
    config=None,
    redis_url=None,
    output_root=None,
) -> dict:
    from trajectories.evaluation.report import EVAL_NAME, EvalError, evaluate_files

    path = Path(target).expanduser()
    if not path.exists() and (path.suffix.lower() in VIDEO_SUFFIXES or "/" in target):
        raise BadInput(f"{target} not found", "give a video file, a job directory or a job id")
    if path.is_file():
        video, default_output = path, path.with_name(path.stem + ".eval.json")
        directory = None
    else:
        directory = path if path.is_dir() else _job_directory(target, config, redis_url, output_root)
        video, default_output = directory / VIDEO_FILE, directory / EVAL_NAME
        if not video.is_file():
            raise BadInput(f"{directory} has no {VIDEO_FILE} (yet)", "wait for the job to finish, or give a video file")
    if trajectory is None:
        if directory is None or not (directory / TRAJECTORY_FILE).is_file():
            raise BadInput(
                f"no trajectory for {video}", "give the path it should follow: --trajectory FILE|PRESET|POSES"
            )
        trajectory = str(directory / TRAJECTORY_FILE)
    if reference is not None and not reference.is_file():
        raise BadInput(f"reference video {reference} not found", "give an existing video file with --reference")
    try:
        return evaluate_files(video, trajectory, output or default_output, reference, chunk_latents, stride)
    except EvalError as error:
        raise BadInput(str(error), "give a video file ffmpeg can decode") from None


def submit_eval(
    conn,
    settings,
    target: str,
    queue: str | None = None,
    *,
    depends_on: bool = True,
    batch: str | None = None,
    chunk_latents: int = 4,
    stride: int = 8,
) -> str:
    """Enqueue an eval job of job `target` (`worker.tasks.eval`), after it when `depends_on`: a parent that
    fails fails the eval job too, with the parent's reason. Returns the eval job's id."""
    from worldplay_cli.contract.evaljob import EvalSpec
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.submit import check_output_root, enqueue_or_remove, write_job_dir

    spec = EvalSpec(target=target, chunk_latents=chunk_latents, stride=stride)
    check_output_root(settings)
    job_id = new_job_id(f"eval-{target.split('-', 3)[-1]}")
    directory = write_job_dir(settings, job_id, {}, spec.model_dump_json(indent=2).encode())
    enqueue_or_remove(
        conn,
        settings,
        spec,
        directory,
        queue or settings.queue.default_queue,
        retries_on_lost=None,
        depends_on=[target] if depends_on else None,
        batch=batch,
    )
    return job_id
