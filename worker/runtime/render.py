"""What every rank of a resident group does with the loaded pipeline for one job (`render`), and the
model-directory checks both GPU engines share (`model_dir_for`, `refusing_unusable_model_dirs`).

They live on the runtime floor, below the engines: `worker.runtime.rank` renders, `worker.engines.native`
and `worker.engines.official` pick the model directory, and nothing here imports an engine or the runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from worker.job import JobInputs, allowed_path, refuse

if TYPE_CHECKING:
    from worker.models.vae import SpatialTiling
    from worker.pipeline.pipeline import WorldPlayPipeline
    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.contract.specs import JobSpec


class RenderReporter(Protocol):
    """What `render` reports through: the job's `Reporter` or a rank's relay to the supervisor."""

    def stage(self, name: str) -> None: ...
    def update(
        self, step: int, total: int | None = None, chunk: int | None = None, num_chunks: int | None = None
    ) -> None: ...
    def log(self, message: str) -> None: ...


def model_dir_for(spec: JobSpec, settings: Settings) -> Path:
    """The model directory the job runs from: the worker's `model_dir`, or one of `worker.model_dirs`."""
    return allowed_path(
        spec.model_dir, settings.model_dir, settings.worker.model_dirs, "model directory", "worker.model_dirs"
    )


@contextmanager
def refusing_unusable_model_dirs() -> Iterator[None]:
    """A model directory this worker cannot serve the job from fails the job as `refused`."""
    from worker.pipeline.model_dir import ModelDirError

    try:
        yield
    except ModelDirError as error:
        refuse(error.message, error.hint)


@contextmanager
def refusing_unavailable_backends() -> Iterator[None]:
    """An attention backend this worker cannot run (flash or sage without the package or a CUDA device)
    fails the job as `refused`, with the hint that says what would run."""
    from worker.models.attention import BackendUnavailable

    try:
        yield
    except BackendUnavailable as error:
        refuse(error.message, error.hint)


def engine_facts(pipeline: WorldPlayPipeline) -> dict:
    """What the manifest says of the loaded pipeline a job or session ran on."""
    from worker.models.fp8 import fp8_matmul

    transformer = pipeline.transformer
    matmul = fp8_matmul(transformer)
    return {
        "variant": pipeline.variant,
        "model_dir": str(pipeline.paths.root),
        "checkpoint": str(pipeline.paths.action_checkpoint),
        "device": str(pipeline.device),
        "device_name": device_name(pipeline.device),
        "dtype": str(transformer.dtype).removeprefix("torch."),
        "attention": transformer.attention_backend_in_use(),
        "weights": "default" if matmul is None else f"fp8 ({matmul})",
        "compile": getattr(transformer, "compile_backend", None),
    }


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
    from worker.pipeline.pipeline import GenerationError
    from worldplay_cli.contract.specs import PRE_SR_VIDEO_FILE

    facts = engine_facts(pipeline)
    reporter.log(
        f"native: {spec.variant} from {facts['model_dir']} on {facts['device']} ({facts['dtype']}, attention {facts['attention']}, "
        f"weights {facts['weights']}, compile {facts['compile'] or 'off'})"
    )
    options = generation_options(spec, tiling, super_resolution=spec.sr)

    def on_step(event) -> None:
        done = event.chunk * event.steps + event.step
        reporter.update(done, event.num_chunks * event.steps, chunk=event.chunk + 1, num_chunks=event.num_chunks)

    compiled_before = compile_totals() if facts["compile"] else None
    try:
        result = pipeline.generate(
            spec.prompt,
            inputs.load_image(),
            inputs.load_trajectory(),
            video,
            options,
            on_step=on_step,
            on_stage=reporter.stage,
            pre_sr_output=video.with_name(PRE_SR_VIDEO_FILE) if spec.keep_pre_sr and video is not None else None,
        )
    except GenerationError as error:
        refuse(error.message, error.hint, kind="bad_input")
    for chunk in result.chunks:
        reporter.log(
            f"chunk {chunk.index + 1}/{len(result.chunks)}: latents {chunk.latents[0]}-{chunk.latents[1] - 1}, "
            f"{len(chunk.context)} context latents, denoise {chunk.denoise_s:.2f} s, decode {chunk.decode_s:.2f} s"
        )
    if compiled_before is not None:
        # what this job compiled (a resident group's later jobs reuse the graphs: usually nothing)
        seconds, graphs = (after - before for after, before in zip(compile_totals(), compiled_before))
        facts["compile_stats"] = {"compile_s": round(seconds, 3), "graphs": graphs}
    return {**facts, **result.info(), **window_facts(options)}


def compile_totals() -> tuple[float, int]:
    """Seconds this process has spent compiling (torch.compile, every backend stage) and the graphs made."""
    from torch._dynamo.utils import calculate_time_spent, counters

    return calculate_time_spent().get("total_wall_time", 0.0), counters["stats"]["unique_graphs"]


def window_facts(options) -> dict:
    """The manifest's record of the attention window a job or session ran with (nothing without one)."""
    window = options.attention_window
    if window is None:
        return {}
    return {
        "attention_window": {"sink_latents": window.sink_latents, "local_window_latents": window.local_window_latents}
    }


def device_name(device) -> str:
    """What the hardware is called (`worldplay bench` looks its peak up by it)."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def generation_options(spec: JobSpec | PlaySpec, tiling: SpatialTiling | None, **extra):
    """The pipeline's `GenerationOptions` for a job's or a session's spec (the same names on both)."""
    from worker.models.transformer import AttentionWindow
    from worker.pipeline.pipeline import GenerationOptions

    if spec.sink_latents is not None:
        extra["attention_window"] = AttentionWindow(spec.sink_latents, spec.local_window_latents)
    return GenerationOptions(
        seed=spec.seed,
        steps=spec.steps,
        guidance=spec.guidance,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        tiling=tiling,
        **extra,
    )
