"""The rq task of `worldplay train --queue`: supervise a training process and mirror it into the job.

The task runs `python -m worker.training` (through torchrun for several GPUs) in the job directory and
turns its JSON-lines events into `job.meta`: `progress` (step/total, fraction, ETA, the shared Progress
model) and `train` (last loss, lr, throughput and a capped loss history for the dashboard's curve; for a
distillation run the loss is the critic's and `generator_loss` / its history are the student's). A
cancel asks the process to stop (SIGINT), which saves a checkpoint before it exits. A re-run of the job
(after a lost worker) resumes from the newest checkpoint in the job directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from worker.job import JobFailed
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.specs import Failure
from worldplay_cli.contract.training import TrainJobSpec

LOSS_HISTORY_POINTS = 400


def training_command(config_path: Path, resume: Path | None, processes: int) -> list[str]:
    """The training process: one rank, or torchrun with one rank per GPU (gloo ranks on a CPU host)."""
    arguments = ["-m", "worker.training"]
    arguments += ["resume", str(resume)] if resume is not None else ["train", str(config_path), "--config-json"]
    arguments.append("--events")
    if processes == 1:
        return [sys.executable, *arguments]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *arguments]


def append_history(history: list[list[float]], step: int, loss: float) -> list[list[float]]:
    """Add a point; past the cap, keep every other point so the whole run stays covered."""
    history.append([step, loss])
    if len(history) > LOSS_HISTORY_POINTS:
        history = history[::2]
    return history


def train(spec_data: dict) -> dict:
    """The body of the `worker.training.job.train` task."""
    from rq import get_current_job

    from worker.job import classify, record_end
    from worker.progress import Reporter
    from worker.training.checkpoints import checkpoint_dirs
    from worldplay_cli.contract.settings import OUTPUT_MODES, load_settings

    job = get_current_job()
    conn = job.connection
    settings = load_settings()
    directory = Path(settings.output_root) / job.id
    directory.mkdir(parents=True, exist_ok=True, mode=OUTPUT_MODES[settings.output_mode])
    job.get_meta(refresh=True)
    attempt = JobMeta.start_attempt(job.meta, str(directory))
    job.save_meta()
    reporter = Reporter(conn, job, directory / "log.txt", settings)
    spec = None
    try:
        spec = TrainJobSpec.model_validate(spec_data)
        config = spec.config.model_copy(
            update={"checkpoint": spec.config.checkpoint.model_copy(update={"output_dir": str(directory)})}
        )
        config_path = directory / "train_config.json"
        config_path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
        existing = checkpoint_dirs(directory)
        resume = existing[-1][1] if existing else (Path(spec.resume) if spec.resume else None)
        reporter.log(
            f"attempt {attempt}: training {config.method.name} for {config.max_steps} steps"
            + (f", resuming from {resume}" if resume else "")
        )
        reporter.stage("train")
        summary = _supervise(training_command(config_path, resume, spec.gpus), directory, job, reporter)
        reporter.finish()
        job.meta["train"] = {**job.meta.get("train", {}), "checkpoint": summary.get("checkpoint")}
        job.save_meta()
        return summary
    except BaseException as error:
        failure = classify(error, None)
        record_end(conn, settings, job, failure, "stopped" if failure.kind == "canceled" else "failed")
        raise


def _supervise(command: list[str], directory: Path, job, reporter) -> dict:
    from worker.progress import JobCanceled

    with (directory / "train.log").open("a") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(os.environ))
        canceled = False
        last: dict = {}
        train_meta = job.meta.setdefault("train", {"loss_history": []})
        for line in process.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            last = record
            if record.get("kind") == "train":
                train_meta.update(
                    step=record["step"],
                    max_steps=record["max_steps"],
                    loss=record["loss"],
                    lr=record["lr"],
                    samples_per_s=record["samples_per_s"],
                    eta_s=record["eta_s"],
                    loss_history=append_history(train_meta.get("loss_history", []), record["step"], record["loss"]),
                )
                if record.get("generator_loss") is not None:
                    # distillation: `loss` is the critic's (every iteration), this is the student's last update
                    train_meta.update(generator_loss=record["generator_loss"], critic_lr=record.get("critic_lr"))
                    train_meta["generator_loss_history"] = append_history(
                        train_meta.get("generator_loss_history", []), record["step"], record["generator_loss"]
                    )
                try:
                    reporter.update(record["step"], record["max_steps"])
                except JobCanceled:
                    if not canceled:
                        canceled = True
                        reporter.log("cancel requested: saving a checkpoint before stopping")
                        process.send_signal(signal.SIGINT)
            elif record.get("kind") in ("checkpoint", "validation"):
                reporter.log(json.dumps(record))
                if record["kind"] == "validation":
                    train_meta["validation"] = {key: value for key, value in record.items() if key != "kind"}
        code = process.wait()
    if canceled:
        raise JobCanceled("canceled by the user (checkpoint saved)")
    if last.get("kind") == "error":
        kind = "bad_input" if code == 2 else "engine_error"
        raise JobFailed(Failure(kind=kind, message=last["message"], hint=last.get("hint")))
    if code != 0 or last.get("kind") != "summary":
        raise JobFailed(
            Failure(
                kind="engine_error",
                message=f"training process exited with code {code}",
                hint=f"see {directory / 'train.log'}",
            )
        )
    if last.get("stopped"):
        raise JobCanceled("stopped (checkpoint saved)")
    return {key: value for key, value in last.items() if key != "kind"}
