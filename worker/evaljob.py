"""The eval task: `trajectories.evaluation` on a finished job's video and trajectory, in the work horse (CPU only; no
engine, no model). A parent that did not finish ends the job as `parent_failed` (rq only runs a dependent
after its parent finished; this guards a job enqueued by hand)."""

from __future__ import annotations

from pathlib import Path

from worldplay_cli.contract.evaljob import EvalSpec
from worldplay_cli.contract.meta import JobMeta

EVAL_FILE = "eval.json"


def run_eval(job, spec_data: dict) -> dict:
    from rq.job import JobStatus

    from trajectories.evaluation.report import evaluate_files
    from worker.job import classify, record_end, refuse
    from worldplay_cli.contract.queue import append_log, fetch_job
    from worldplay_cli.contract.settings import OUTPUT_MODES, load_settings
    from worldplay_cli.contract.specs import VIDEO_FILE

    conn = job.connection
    settings = load_settings()
    directory = Path(settings.output_root) / job.id
    directory.mkdir(parents=True, exist_ok=True, mode=OUTPUT_MODES[settings.output_mode])
    job.get_meta(refresh=True)
    JobMeta.start_attempt(job.meta, str(directory))
    job.save_meta()
    try:
        spec = EvalSpec.model_validate(spec_data)
        parent = fetch_job(conn, spec.target)
        status = None if parent is None else parent.get_status(refresh=True)
        if status != JobStatus.FINISHED:
            refuse(
                f"parent job {spec.target} {'is gone' if parent is None else status}",
                f"see `worldplay jobs show {spec.target}`",
                kind="parent_failed",
            )
        target = Path(settings.output_root) / spec.target
        append_log(conn, settings, job.id, f"evaluating {target / VIDEO_FILE}", directory / "log.txt")
        result = evaluate_files(
            target / VIDEO_FILE,
            target / "trajectory.json",
            directory / EVAL_FILE,
            chunk_latents=spec.chunk_latents,
            stride=spec.stride,
        )
        camera = result["camera_following"]
        append_log(
            conn,
            settings,
            job.id,
            f"finished: R_dist {camera['R_dist']}, T_dist {camera['T_dist']}",
            directory / "log.txt",
        )
        return {"eval": str(directory / EVAL_FILE), "target": spec.target}
    except BaseException as error:
        record_end(conn, settings, job, classify(error, None))
        raise
