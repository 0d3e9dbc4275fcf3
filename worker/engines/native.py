"""The `native` engine: our WorldPlay implementation (`worker.pipeline`) behind the queue, kept loaded.

Each rq worker forks a work horse per job, so a model loaded in the horse would be gone after the job.
`NativeEngine.run` (in the horse) therefore hands the job to this worker's resident rank group
(`worker.runtime`): the ranks load the model once, serve job after job, and run a job over `spec.gpus`
ranks sequence-parallel. `render` is what every rank does with the loaded pipeline for one job.

The model directory is this worker's `model_dir` setting, or the one the job names if the worker allows
it (`worker.model_dirs`; paths are per host, so a worker may hold the weights elsewhere than the
submitting machine).
Progress is reported per denoising step and chunk, the video file grows chunk by chunk while the next
chunk is denoised, and the manifest gets per-stage and per-chunk timings and the memory context of every
chunk. A model directory that lacks pieces or a request the variant cannot serve fails with one line
naming the problem and the command that fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from worker.engines import EngineResult, JobInputs

if TYPE_CHECKING:
    from worldplay_cli.contract.specs import JobSpec
    from worker.models.vae import SpatialTiling
    from worker.pipeline.pipeline import WorldPlayPipeline
    from worker.progress import Reporter


class RenderReporter(Protocol):
    """What `render` reports through: the job's `Reporter` or a rank's relay to the supervisor."""

    def stage(self, name: str) -> None: ...
    def update(self, step: int, total: int | None = None, chunk: int | None = None, num_chunks: int | None = None) -> None: ...
    def log(self, message: str) -> None: ...


def model_dir_for(spec: JobSpec) -> Path:
    from worldplay_cli.contract.settings import load_settings
    from worker.engines import allowed_path

    settings = load_settings()
    return allowed_path(spec.model_dir, settings.model_dir, settings.worker.model_dirs, "model directory", "worker.model_dirs")


@contextmanager
def refusing_unusable_model_dirs() -> Iterator[None]:
    """A model directory this worker cannot serve the job from fails the job as `refused`."""
    from worldplay_cli.contract.specs import Failure
    from worker.pipeline.model_dir import ModelDirError
    from worker.runner import JobFailed

    try:
        yield
    except ModelDirError as error:
        raise JobFailed(Failure(kind="refused", message=error.message, hint=error.hint or None)) from None


def render(
    pipeline: WorldPlayPipeline,
    spec: JobSpec,
    inputs: JobInputs,
    video: Path | None,
    reporter: RenderReporter,
    tiling: SpatialTiling | None = None,
) -> dict:
    """Generate `spec` with a loaded pipeline into `video` (None: compute alongside, keep no file, as the
    other ranks of a sequence-parallel group do). Returns the engine facts for the manifest."""
    from worldplay_cli.contract.specs import Failure
    from worker.pipeline.pipeline import GenerationError, GenerationOptions
    from worker.runner import JobFailed

    transformer = pipeline.transformer
    facts = {
        "variant": spec.variant,
        "model_dir": str(pipeline.paths.root),
        "checkpoint": str(pipeline.paths.action_checkpoint),
        "device": str(pipeline.device),
        "dtype": str(transformer.dtype).removeprefix("torch."),
        "attention": transformer.attention_backend_in_use(),
    }
    reporter.log(
        f"native: {spec.variant} from {facts['model_dir']} on {facts['device']} ({facts['dtype']}, attention {facts['attention']})"
    )
    options = GenerationOptions(
        seed=spec.seed,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        tiling=tiling,
    )

    def on_step(event) -> None:
        done = event.chunk * event.steps + event.step
        reporter.update(done, event.num_chunks * event.steps, chunk=event.chunk + 1, num_chunks=event.num_chunks)

    try:
        result = pipeline.generate(
            spec.prompt, inputs.load_image(), inputs.load_trajectory(), video, options, on_step=on_step, on_stage=reporter.stage
        )
    except GenerationError as error:
        raise JobFailed(Failure(kind="bad_input", message=error.message, hint=error.hint or None)) from None
    for chunk in result.chunks:
        reporter.log(
            f"chunk {chunk.index + 1}/{len(result.chunks)}: latents {chunk.latents[0]}-{chunk.latents[1] - 1}, "
            f"{len(chunk.context)} context latents, denoise {chunk.denoise_s:.2f} s, decode {chunk.decode_s:.2f} s"
        )
    return {**facts, **result.info()}


def _check_gpu_count(spec: JobSpec) -> None:
    """Refuse a job wanting more GPUs than this worker was given, before a rank group fails to start."""
    from worldplay_cli.contract.specs import Failure
    from worker.runner import JobFailed

    visible = [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device.strip()]
    if visible and spec.gpus > len(visible):
        raise JobFailed(
            Failure(
                kind="bad_input",
                message=f"the job asks for {spec.gpus} GPUs but this worker has {len(visible)} ({','.join(visible)})",
                hint=f"serve its queue with `worldplay worker --gpus` giving a set of {spec.gpus} (e.g. 0-{spec.gpus - 1}), "
                f"or submit with --gpus {len(visible)}",
            )
        )


class NativeEngine:
    """The work horse's side: send the job to this worker's resident group and relay what it reports."""

    name = "native"
    uses_gpu = True

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from worldplay_cli.contract.specs import Failure
        from worker.progress import JobCanceled
        from worker.runner import JobFailed
        from worker.runtime import client
        from worker.runtime.memory_profiles import requested_profile
        from worker.runtime.protocol import ConnectionClosed

        _check_gpu_count(spec)
        reporter.plan({"load": 0.1, "encode": 0.05, "generate": 0.85})
        reporter.stage("load")
        model_dir = model_dir_for(spec)
        # the ranks check the model directory: the horse stays free of torch, so a job starts at once
        job = {
            "type": "job",
            "spec": spec.model_dump(mode="json"),
            "job_dir": str(inputs.job_dir),
            "out_dir": str(out_dir),
            "model_dir": str(model_dir),
            "nproc": max(1, spec.gpus),
            "profile": requested_profile(spec),
        }
        # the rq worker process is the horse's parent: the supervisor lives as long as it does
        owner = os.getppid()
        connection = client.connect(owner)
        try:
            connection.send(job)
            while True:
                message = connection.receive(0.5)
                if message is None:
                    reporter.check_cancel()
                    continue
                kind = message["type"]
                if kind == "stage":
                    reporter.stage(message["name"])
                elif kind == "progress":
                    reporter.update(message["done"], message["total"], chunk=message["chunk"], num_chunks=message["num_chunks"])
                elif kind == "log":
                    reporter.log(message["line"])
                elif kind == "result":
                    return EngineResult(video=out_dir / "video.mp4", info=message["info"])
                elif kind == "canceled":
                    raise JobCanceled("canceled by the user")
                else:
                    raise JobFailed(Failure(kind=message["kind"], message=message["message"], hint=message.get("hint")))
        except ConnectionClosed:
            raise JobFailed(
                Failure(kind="engine_error", message="the resident supervisor went away during the job",
                        hint=f"see {client.log_dir(owner)}")
            ) from None  # fmt: skip
        finally:
            # closing tells the supervisor to cancel a job still running (cancel, timeout)
            connection.close()
