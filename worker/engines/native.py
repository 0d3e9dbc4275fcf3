"""The `native` engine: our WorldPlay implementation (`worker.pipeline`) behind the queue.

The model directory is the job's `model_dir` when the spec carries one, else this worker's `model_dir`
setting (paths are per host, so a worker may hold the weights elsewhere than the submitting machine).
Progress is reported per denoising step and chunk, the video file grows chunk by chunk while the next
chunk is denoised, and the manifest gets per-stage and per-chunk timings and the memory context of every
chunk. A model directory that lacks pieces or a request the variant cannot serve fails with one line
naming the problem and the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from worker.engines import EngineResult, JobInputs

if TYPE_CHECKING:
    from worldplay_cli.schema import JobSpec
    from worker.progress import Reporter


def model_dir_for(spec: JobSpec) -> Path:
    from worldplay_cli.settings import load_settings

    return Path(spec.model_dir or load_settings().model_dir).expanduser()


class NativeEngine:
    name = "native"
    uses_gpu = True

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from worldplay_cli.schema import Failure
        from worker.pipeline.model_dir import ModelDirError
        from worker.pipeline.pipeline import GenerationError, GenerationOptions, WorldPlayPipeline
        from worker.runner import JobFailed

        reporter.plan({"load": 0.1, "encode": 0.05, "generate": 0.85})
        reporter.stage("load")
        model_dir = model_dir_for(spec)
        try:
            pipeline = WorldPlayPipeline.from_model_dir(model_dir, spec.variant)
        except ModelDirError as error:
            raise JobFailed(Failure(kind="refused", message=error.message, hint=error.hint or None)) from None
        reporter.log(
            f"native: {spec.variant} from {model_dir} on {pipeline.device} "
            f"({pipeline.transformer.dtype}, attention {pipeline.transformer.attention_backend_in_use()})"
        )
        trajectory = inputs.load_trajectory()
        options = GenerationOptions(
            seed=spec.seed,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            negative_prompt=spec.negative_prompt,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
        )

        def on_step(event) -> None:
            done = event.chunk * event.steps + event.step
            reporter.update(done, event.num_chunks * event.steps, chunk=event.chunk + 1, num_chunks=event.num_chunks)

        video = out_dir / "video.mp4"
        try:
            result = pipeline.generate(
                spec.prompt, inputs.load_image(), trajectory, video, options, on_step=on_step, on_stage=reporter.stage
            )
        except GenerationError as error:
            raise JobFailed(Failure(kind="bad_input", message=error.message, hint=error.hint or None)) from None
        for chunk in result.chunks:
            reporter.log(
                f"chunk {chunk.index + 1}/{len(result.chunks)}: latents {chunk.latents[0]}-{chunk.latents[1] - 1}, "
                f"{len(chunk.context)} context latents, denoise {chunk.denoise_s:.2f} s, decode {chunk.decode_s:.2f} s"
            )
        info = {
            "variant": spec.variant,
            "model_dir": str(model_dir),
            "checkpoint": str(pipeline.paths.action_checkpoint) if pipeline.paths else None,
            "device": str(pipeline.device),
            "dtype": str(pipeline.transformer.dtype).removeprefix("torch."),
            "attention": pipeline.transformer.attention_backend_in_use(),
            **result.info(),
        }
        return EngineResult(video=video, info=info)
