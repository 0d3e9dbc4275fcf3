"""The WAN-5B WorldPlay generator: prompt (+ optional reference image) + camera trajectory -> video.

    prepare   the frame size (the family's default 1280x704, or --width/--height: multiples of 32); UMT5
              states of the prompt (512 rows); per-latent cameras and action ids from the trajectory, the
              same conversion as the HunyuanVideo pipeline (`worker.pipeline.pipeline.trajectory_cameras`);
              i2v: the image's VAE posterior sample as latent 0 (t2v: none)
    rollout   `worker.pipeline.wan_rollout.wan_ar_rollout`: 4-latent chunks, memory-selected context; the
              distilled variant runs its four fixed timesteps, the others a shift-warped flow-match schedule
    decode    each finished chunk through the streaming Wan2.2 decoder (one latent at a time, as the
              official pipeline) into the video writer, which encodes in a thread while the next chunk is
              denoised, so the file grows chunk by chunk

The surface is the HunyuanVideo pipeline's where the runtime uses it (`variant`, `paths`, `device`,
`transformer`, `generate(...)` returning a result with `chunks` and `info()`), so the resident ranks, the
memory profiles and `worker.runtime.render` serve both families; `worker.pipeline.families` picks the class.
The noise, the image's posterior sample and nothing else come from one seeded CPU generator, so a seed
means the same video on any device.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worker.models.flops import Flops, tokens_per_latent, wan_chunk_flops
from worker.models.scheduler import FlowMatchScheduler
from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer, load_wan_transformer
from worker.models.wan.vae import WanStreamDecoder, WanVAE, load_wan_vae
from worker.pipeline.image import as_pil, to_uint8_frames
from worker.pipeline.model_dir import ModelPaths, resolve_model_dir
from worker.pipeline.pipeline import (
    ChunkRecord,
    GenerationError,
    GenerationOptions,
    GenerationResult,
    component,
    default_device,
    trajectory_cameras,
)
from worker.pipeline.rollout import ChunkResult, StepCallback
from worker.pipeline.wan_encoders import WanTextEncoder, image_condition
from worker.pipeline.wan_rollout import CHUNK_LATENTS, wan_ar_rollout
from worldplay_cli.contract import layout, variants

DEFAULT_SHIFT = 5.0  # when the base's scheduler config names none


@dataclass
class WanPrepared:
    """What the rollout conditions on, and the sizes it runs at."""

    text_states: torch.Tensor  # [1, 512, text_dim]
    viewmats: torch.Tensor  # [N, 4, 4] world-to-camera
    intrinsics: torch.Tensor  # [N, 3, 3] normalised
    action_ids: torch.Tensor  # [N]
    first_latent: torch.Tensor | None  # i2v: [1, C, 1, h, w]
    generator: torch.Generator
    width: int
    height: int
    timesteps: tuple[float, ...] | None  # None: the distilled schedule
    steps: int
    encode_s: float


class WanPipeline:
    def __init__(
        self,
        variant: str,
        transformer: WanWorldPlayTransformer,
        vae: WanVAE,
        text_encoder: WanTextEncoder,
        paths: ModelPaths | None = None,
        shift: float = DEFAULT_SHIFT,
    ):
        record = variants.find(variant)
        if record is None or record.family_name != "wan":
            wan = [record.name for record in variants.all_variants() if record.family_name == "wan"]
            raise GenerationError(f"{variant!r} is no WAN variant", f"choose one of {', '.join(wan)}")
        self.variant = variant
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.paths = paths
        self.shift = shift
        self.super_resolution = None  # the family has no SR stage (its record says so)

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def chunk_latents(self) -> int:
        return variants.get(self.variant).chunk_latents

    @classmethod
    def from_model_dir(
        cls,
        root: str | Path,
        variant: str,
        checkpoint: str | Path | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        attention_backend: str = "auto",
        encoders_device: torch.device | str | None = None,
    ) -> WanPipeline:
        """Load `variant` from the WAN layout: transformer and VAE bf16 on CUDA (as the official script),
        the UMT5 encoder bf16 there too; everything fp32 on CPU."""
        paths = resolve_model_dir(root, variant, checkpoint)
        wan = layout.WanLayout(paths.root)
        device = torch.device(device) if device is not None else default_device()
        cuda = device.type == "cuda"
        dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
        with component("transformer", paths):
            config = WanConfig.from_json(paths.transformer_dir / layout.CONFIG_NAME)
            transformer = load_wan_transformer(
                paths.action_checkpoint, config, device=device, dtype=dtype, attention_backend=attention_backend
            )
        with component("VAE", paths):
            vae = load_wan_vae(wan.vae_dir, device=device, dtype=dtype)
        with component("UMT5 text encoder", paths):
            text_encoder = WanTextEncoder.load(
                wan.text_encoder_dir, wan.tokenizer_dir, encoders_device or device, dtype
            )
        with component("scheduler config", paths):
            scheduler = json.loads((wan.scheduler_dir / layout.SCHEDULER_CONFIG_NAME).read_text())
        check_components(transformer, vae, text_encoder)
        return cls(variant, transformer, vae, text_encoder, paths, float(scheduler.get("shift", DEFAULT_SHIFT)))

    # -- the runtime's view of its parts ----------------------------------------------------------------

    def offloadable_encoders(self) -> list[torch.nn.Module]:
        """The models a memory profile may keep in host memory outside the encode stage."""
        return [self.text_encoder.model]

    def transformer_blocks(self) -> torch.nn.ModuleList:
        return self.transformer.blocks

    def refuse_super_resolution(self) -> None:
        raise GenerationError("the WAN family has no super-resolution stage", "generate without --sr")

    def chunk_flops(self, prepared: WanPrepared, chunk_latents: int, context_latents: int) -> Flops:
        """The analytic work of one chunk of this video (its latent grid, text rows and steps)."""
        scale = self.vae.config.scale_factor_spatial
        tokens = tokens_per_latent(self.transformer.config, prepared.height // scale, prepared.width // scale)
        config, text = self.transformer.config, prepared.text_states.shape[1]
        return wan_chunk_flops(config, tokens, chunk_latents, context_latents, text, prepared.steps)

    # -- stages -------------------------------------------------------------------------------------------

    def check_options(self, options: GenerationOptions) -> None:
        """Refuse what the family has not: the SR stage, classifier-free guidance, an attention window."""
        if options.super_resolution:
            self.refuse_super_resolution()
        if options.attention_window is not None:
            raise GenerationError(
                "the WAN family's rollout keeps no attention window (its memory rule picks the context)",
                "omit --sink-latents and --local-window-latents",
            )
        if options.guidance not in (None, 1.0):
            raise GenerationError(
                "the WAN family runs without classifier-free guidance", "omit --guidance (or use --guidance 1)"
            )

    def first_latent(
        self, image: Image.Image | None, width: int, height: int, generator: torch.Generator
    ) -> torch.Tensor | None:
        """i2v: the image's normalised VAE posterior sample [1, C, 1, h, w] (drawn from `generator`); t2v: None."""
        if image is None:
            return None
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            return image_condition(self.vae, as_pil(image), width, height, generator)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The prompt's UMT5 states [1, 512, text_dim] on the transformer's device and dtype."""
        # a memory profile may have moved the encoder since it was loaded
        self.text_encoder.device = next(self.text_encoder.model.parameters()).device
        with torch.inference_mode():
            return self.text_encoder.encode([prompt]).to(self.device, self.transformer.dtype)

    def decode_streaming(self, decoder: WanStreamDecoder, latents: torch.Tensor, truncate_pixels: bool) -> np.ndarray:
        """The uint8 frames [F, H, W, 3] of the next normalised latents [1, C, t, h, w] of a streamed video,
        one latent per decoder call as the official pipeline decodes."""
        with torch.inference_mode():
            pixels = [decoder.decode_next(latents[:, :, offset : offset + 1]) for offset in range(latents.shape[2])]
            return to_uint8_frames(torch.cat(pixels, dim=2).float(), truncate_pixels)

    def size(self, options: GenerationOptions) -> tuple[int, int]:
        """(width, height): the options' or the family's default; refused when the family cannot make it."""
        family = variants.get(self.variant).family
        if (options.width is None) != (options.height is None):
            raise GenerationError("give both width and height, or neither", "omit both for the default size")
        width, height = (options.width, options.height) if options.width is not None else family.default_size
        problem = family.check_size(width, height)
        if problem is not None:
            raise GenerationError(problem, f"use --width {family.default_size[0]} --height {family.default_size[1]}")
        return width, height

    def timesteps(self, options: GenerationOptions) -> tuple[tuple[float, ...] | None, int]:
        """(the rollout's timesteps, or None for the distilled ones; the step count)."""
        record = variants.get(self.variant)
        steps = options.steps or record.steps
        if record.few_step:
            if steps != record.steps:
                raise GenerationError(
                    f"{self.variant} runs its {record.steps} distilled timesteps, not {steps} steps",
                    f"omit --steps (or use --steps {record.steps})",
                )
            return None, steps
        return tuple(FlowMatchScheduler(steps, self.shift).sigmas.mul(1000).tolist()), steps

    @torch.inference_mode()
    def prepare(
        self, prompt: str, image: Image.Image | None, trajectory, options: GenerationOptions = GenerationOptions()
    ) -> WanPrepared:
        started = time.perf_counter()
        self.check_options(options)
        num_latents = trajectory.num_latents
        if num_latents % CHUNK_LATENTS:
            raise GenerationError(
                f"{self.variant} generates {CHUNK_LATENTS}-latent chunks; {num_latents} latents is not a multiple",
                "use a trajectory of 4k latents (16k + 1 frames)",
            )
        width, height = self.size(options)
        timesteps, steps = self.timesteps(options)
        generator = torch.Generator().manual_seed(options.seed)
        first_latent = self.first_latent(image, width, height, generator)
        text_states = self.encode_prompt(prompt)
        viewmats, intrinsics, actions = trajectory_cameras(trajectory, torch.device("cpu"), options.round_cameras)
        return WanPrepared(
            text_states=text_states,
            viewmats=viewmats[0],
            intrinsics=intrinsics[0],
            action_ids=actions[0],
            first_latent=first_latent,
            generator=generator,
            width=width,
            height=height,
            timesteps=timesteps,
            steps=steps,
            encode_s=time.perf_counter() - started,
        )

    def generate(
        self,
        prompt: str,
        image: Image.Image | np.ndarray | None,
        trajectory,
        output: str | Path | None,
        options: GenerationOptions = GenerationOptions(),
        *,
        on_step: StepCallback | None = None,
        on_stage: Callable[[str], None] | None = None,
        frame_filter: Callable[[int, np.ndarray], np.ndarray] | None = None,
        write_video: Callable | None = None,
        pre_sr_output: str | Path | None = None,
        noise: torch.Tensor | None = None,
    ) -> GenerationResult:
        """Generate and write `output` (an mp4, atomically; None: decode but keep no file). `on_step` follows
        every denoising step of every chunk; `noise` [1, C, N, h, w] replaces the seeded noise."""
        if write_video is None:
            from worker.video import write_video
        if on_stage:
            on_stage("encode")
        prepared = self.prepare(prompt, as_pil(image) if image is not None else None, trajectory, options)
        result = GenerationResult(
            video=Path(output) if output is not None else None,
            num_frames=trajectory.num_frames,
            width=prepared.width,
            height=prepared.height,
            fps=options.fps,
            steps=prepared.steps,
            guidance_scale=1.0,
            stages={"encode": prepared.encode_s, "context": 0.0, "denoise": 0.0, "decode": 0.0},
        )
        if on_stage:
            on_stage("generate")
        writer = _BackgroundWriter(write_video, output, options.fps, frame_filter)
        decoder = self.vae.stream_decoder()

        def on_chunk(chunk: ChunkResult) -> None:
            started = time.perf_counter()
            frames = self.decode_streaming(decoder, chunk.latents, options.truncate_pixels)
            decode_s = time.perf_counter() - started
            record = ChunkRecord(
                chunk.index, (chunk.start, chunk.end), chunk.context, chunk.context_s, chunk.denoise_s, decode_s
            )
            record.tflop = self.chunk_flops(prepared, chunk.end - chunk.start, len(chunk.context)).total / 1e12
            result.chunks.append(record)
            for stage, seconds in (("context", chunk.context_s), ("denoise", chunk.denoise_s), ("decode", decode_s)):
                result.stages[stage] += seconds
            writer.put(frames)

        try:
            with torch.inference_mode():
                result.latents = wan_ar_rollout(
                    self.transformer,
                    text_states=prepared.text_states,
                    num_latents=trajectory.num_latents,
                    height_latents=prepared.height // self.vae.config.scale_factor_spatial,
                    width_latents=prepared.width // self.vae.config.scale_factor_spatial,
                    viewmats=prepared.viewmats,
                    intrinsics=prepared.intrinsics,
                    action_ids=prepared.action_ids,
                    first_latent=prepared.first_latent,
                    generator=prepared.generator,
                    steps=prepared.timesteps,
                    noise=noise,
                    on_chunk=on_chunk,
                    on_step=on_step,
                )
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        return result


class _Aborted(Exception):
    """The rollout failed or was canceled: the writer drops its partial file."""


class _BackgroundWriter:
    """`write_video` in a thread fed chunk by chunk, so encoding overlaps the next chunk's denoising; with no
    output the frames are dropped as they come."""

    _END = object()

    def __init__(self, write_video: Callable, output: str | Path | None, fps: int, frame_filter):
        self._frames: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = None
        if output is not None:
            self._thread = threading.Thread(
                target=self._run, args=(write_video, Path(output), fps, frame_filter), daemon=True
            )
            self._thread.start()

    def _iterate(self):
        while True:
            item = self._frames.get()
            if item is self._END:
                return
            if isinstance(item, _Aborted):
                raise item
            yield from item

    def _run(self, write_video, output: Path, fps: int, frame_filter) -> None:
        frames = self._iterate()
        if frame_filter is not None:
            frames = (frame_filter(index, frame) for index, frame in enumerate(frames))
        try:
            write_video(frames, output, fps=fps)
        except BaseException as error:  # re-raised by `finish` in the caller's thread
            self._error = error

    def put(self, frames: np.ndarray) -> None:
        if self._thread is not None:
            self._frames.put(frames)

    def abort(self) -> None:
        if self._thread is not None:
            self._frames.put(_Aborted())
            self._thread.join()

    def finish(self) -> None:
        if self._thread is None:
            return
        self._frames.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error


def check_components(transformer: WanWorldPlayTransformer, vae: WanVAE, text_encoder: WanTextEncoder) -> None:
    """Refuse components that cannot work together (e.g. a tiny VAE next to the released transformer)."""
    from worker.pipeline.model_dir import ModelDirError

    config = transformer.config
    pairs = [
        ("VAE latent channels", vae.config.z_dim, "transformer in_channels", config.in_channels),
        ("UMT5 width", text_encoder.model.config.d_model, "transformer text_dim", config.text_dim),
    ]
    mismatched = [f"{left} {a} != {right} {b}" for left, a, right, b in pairs if a != b]
    if mismatched:
        raise ModelDirError(
            "model components do not belong together: " + "; ".join(mismatched),
            "the model directory mixes pieces of different models; re-download it with `worldplay download`",
        )
