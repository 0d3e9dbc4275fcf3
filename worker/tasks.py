"""The rq task entry points. Only names listed in `worldplay_cli.contract.specs.ALLOWED_TASKS` ever run."""

from __future__ import annotations


def generate(spec: dict) -> dict:
    """Render one video from a `JobSpec` (as JSON) into `<output root>/<job id>/`."""
    from rq import get_current_job

    from worker.runner import run_generate

    return run_generate(get_current_job(), spec)


def play(spec: dict) -> dict:
    """Serve one live session (`PlaySpec` as JSON) to its player; outputs into `<output root>/<job id>/`."""
    from rq import get_current_job

    from worker.play.session import run_play

    return run_play(get_current_job(), spec)


def eval(spec: dict) -> dict:
    """Evaluate a finished job's video (`EvalSpec` as JSON) into `<output root>/<job id>/eval.json`."""
    from rq import get_current_job

    from worker.evaljob import run_eval

    return run_eval(get_current_job(), spec)


def noop() -> None:
    """Does nothing: health checks and queue-overhead benchmarks."""
    return None
