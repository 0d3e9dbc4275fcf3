"""The native WorldPlay generator: reference image + prompt + camera trajectory -> 24 fps video.

    prepare   bucket size, LANCZOS cover-resize + centre crop, VAE condition latent and mask; text, glyph
              and SigLIP states; per-latent cameras and actions; seeded CPU noise (or injected noise)
    rollout   `bi` or AR chunks (`worker.pipeline.rollout`), memory-selected context per chunk
    decode    each finished chunk goes through the streaming VAE decoder straight into the video writer,
              so the file grows while the next chunk is denoised; the writer finalises it atomically

    super-resolution  with `super_resolution`: the finished 480p latents through the 720p SR stage
              (`worker.pipeline.super_resolution`), decoded tiled; the 480p video is then decoded only
              when it is kept (`pre_sr_output`)

Everything the official `generate.py` does for one video, minus its traps: the noise is
reproducible on any device (a seeded CPU generator instead of a CUDA one), the memory point cloud is
seeded, pixels are rounded rather than truncated (`truncate_pixels` restores the official behaviour), and
bad frame counts are refused instead of decoding noise.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worker.models.attention import resolve_backend
from worker.models.checkpoint import load_transformer
from worker.models.flops import Flops, ar_chunk_flops, bi_chunk_flops, text_tokens, tokens_per_latent
from worker.models.fp8 import matmul_for, quantize_blocks
from worker.models.scheduler import FlowMatchScheduler
from worker.models.transformer import AttentionWindow, KVCache, PromptEmbeddings, WorldPlayTransformer
from worker.models.vae import HunyuanVideo15VAE, SpatialTiling, StreamingDecoder, load_vae
from worker.pipeline.encoders import ConditionEncoders, ConditionStates
from worker.pipeline.image import as_pil, generation_size, image_to_video_tensor, to_uint8_frames
from worker.pipeline.memory import DEFAULT_SEED as MEMORY_SEED
from worker.pipeline.memory import sample_points_in_sphere
from worker.pipeline.model_dir import ModelDirError, ModelPaths, download_command, resolve_model_dir
from worker.pipeline.rollout import (
    AR_TEXT_TIMESTEP,
    ChunkResult,
    RolloutInputs,
    StepCallback,
    StepEvent,
    ar_rollout,
    bi_rollout,
)
from worker.pipeline.super_resolution import SuperResolution, sr_condition
from worldplay_cli.contract import sr, variants
from worldplay_cli.contract.buckets import RESOLUTION_BASE, SUPER_RESOLUTION_BASE
from worldplay_cli.contract.errors import HintedError

CHUNK_LATENTS = variants.view(lambda record: record.chunk_latents)  # variant -> latents per chunk, live
FPS = 24


class GenerationError(HintedError, ValueError):
    """A request the pipeline cannot serve (frame count, sizes, inputs); `hint` says how to fix it."""

    show_hint = True

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint)


@dataclass(frozen=True)
class GenerationOptions:
    """How to sample; None means the variant's official recipe (50 steps / CFG 6, distilled 4 / none).
    The names are the job spec's (`steps`, `guidance`), from `worldplay generate --steps/--guidance` on."""

    seed: int = 1
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    width: int | None = None  # both or neither; default: the reference image's bucket
    height: int | None = None
    round_latents: bool = True  # bf16 latents between steps, as the official pipeline
    round_cameras: bool = True  # viewmats and K rounded to bf16 before the model, as the official pipeline
    truncate_pixels: bool = False  # the official uint8 truncation, for bit parity
    streaming_decode: bool = True  # False: decode the whole latent video at the end, like the official code
    tiling: SpatialTiling | None = None
    memory_seed: int = MEMORY_SEED
    fps: int = FPS
    super_resolution: bool = False  # the official 720p SR stage after the 480p video (contract.sr)
    # AR variants: each chunk's context is its attention sink and local window instead of the reconstituted
    # memory (bounded attention memory at any length; docs/training.md §9)
    attention_window: AttentionWindow | None = None


@dataclass
class Prepared:
    """The output of `prepare`: rollout inputs plus what describes them."""

    inputs: RolloutInputs
    width: int
    height: int
    steps: int
    guidance_scale: float
    encode_s: float  # the whole of `prepare`, the text pass included
    text_s: float = 0.0  # the AR text K/V pass (0 when the conditioning cache had it)


@dataclass
class ChunkRecord:
    """Per-chunk facts for the manifest."""

    index: int
    latents: tuple[int, int]
    context: list[int]
    context_s: float
    denoise_s: float
    decode_s: float = 0.0
    tflop: float = 0.0  # the chunk's analytic transformer work (`worker.models.flops`), for `worldplay bench`

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "latents": list(self.latents),
            "context": self.context,
            "context_s": round(self.context_s, 4),
            "denoise_s": round(self.denoise_s, 4),
            "decode_s": round(self.decode_s, 4),
            "tflop": round(self.tflop, 6),
        }


@dataclass
class GenerationResult:
    video: Path | None
    num_frames: int
    width: int
    height: int
    fps: int
    steps: int
    guidance_scale: float
    chunks: list[ChunkRecord] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds: encode, context, denoise, decode, sr_*
    latents: torch.Tensor | None = None  # [1, C, T, h, w] denoised (scaled) latents
    # the SR stage's facts (size, recipe, the kept 480p video) when it ran; width/height stay the 480p size
    super_resolution: dict | None = None

    def info(self) -> dict:
        info = {
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "width": self.width,
            "height": self.height,
            "frames": self.num_frames,
            "stages_s": {name: round(seconds, 4) for name, seconds in self.stages.items()},
            "chunks": [chunk.as_dict() for chunk in self.chunks],
        }
        if self.super_resolution is not None:
            info["super_resolution"] = self.super_resolution
        return info


@dataclass
class Conditioning:
    """What a request conditions on besides its cameras: encoder states per guidance branch and, for the AR
    variants, each branch's text K/V (computed once per video at text timestep 0)."""

    prompts: list[PromptEmbeddings]
    text_caches: list[KVCache] | None = None

    @property
    def nbytes(self) -> int:
        tensors = [tensor for prompt in self.prompts for tensor in vars(prompt).values() if tensor is not None]
        for cache in self.text_caches or []:
            tensors += [*cache.text_keys, *cache.text_values]
        return sum(tensor.nbytes for tensor in tensors)


class ConditioningCache:
    """The conditioning of recent requests in a resident pipeline, least recently used out first: the image
    condition latent per (image, size) and the `Conditioning` per (prompt, negative prompt, guidance,
    image, SigLIP crop size). A worker asked for the same prompt and image again skips the encoders and the
    text pass; a new prompt pays them once. Bounded by entries and by bytes (the text K/V of the released
    model is ~0.4 GB per guidance branch on the device); `max_bytes=0` keeps nothing."""

    def __init__(self, max_entries: int = 4, max_bytes: int = 2 * 2**30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: tuple) -> bool:
        """Whether `key` is cached (counts neither a hit nor a miss, and keeps the order)."""
        return key in self._entries

    def get(self, key: tuple):
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        self._entries[key] = (value, nbytes)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(nbytes for _, nbytes in self._entries.values())

    def clear(self) -> None:
        self._entries.clear()


def image_key(image: Image.Image) -> tuple:
    """Identifies a reference image by its pixels (cheap next to encoding it: ~1 ms at 480p)."""
    return (image.mode, image.size, hashlib.sha256(image.tobytes()).hexdigest())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class WorldPlayPipeline:
    def __init__(
        self,
        variant: str,
        transformer: WorldPlayTransformer,
        vae: HunyuanVideo15VAE,
        encoders: ConditionEncoders,
        num_train_timesteps: int = 1000,
        paths: ModelPaths | None = None,
        super_resolution: SuperResolution | None = None,
    ):
        if variants.find(variant) is None:
            raise GenerationError(f"unknown variant {variant!r}", f"choose one of {', '.join(variants.names())}")
        check_components(transformer, vae, encoders)
        self.variant = variant
        self.transformer = transformer
        self.vae = vae
        self.encoders = encoders
        self.num_train_timesteps = num_train_timesteps
        self.paths = paths  # where the components came from, when loaded from a model directory
        # the SR stage: given, or loaded from `paths` by the first job that asks for it and then kept
        self.super_resolution = super_resolution
        self.conditioning_cache = ConditioningCache()
        # the SigLIP states per image: they depend on the image alone, so a new prompt on it skips SigLIP (~1.7 MB
        # each for the released encoder)
        self.vision_cache = ConditioningCache(max_entries=4, max_bytes=64 * 2**20)

    @property
    def chunk_latents(self) -> int:
        return variants.get(self.variant).chunk_latents

    @property
    def device(self) -> torch.device:
        return self.transformer.device

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
        weights: str = "default",
        compile: bool = False,
    ) -> WorldPlayPipeline:
        """Load every component of `variant` from the official layout. On CUDA: transformer bf16 (or
        `dtype`), VAE fp32, LLM and SigLIP fp16 (official); on CPU everything fp32.

        `encoders_device` (default: `device`) places the text and vision encoders elsewhere, e.g. in host
        memory for a caller that moves them to the GPU only to encode; their dtype follows `device`.
        `weights="fp8"` stores the transformer blocks' weights in FP8 (worker.models.fp8); `compile`
        torch.compiles its blocks (the first passes of each shape compile). An attention backend that cannot
        run on `device` raises `BackendUnavailable` before anything is read."""
        paths = resolve_model_dir(root, variant, checkpoint)
        device = torch.device(device) if device is not None else default_device()
        cuda = device.type == "cuda"
        transformer_dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
        resolve_backend(attention_backend, device, transformer_dtype)
        with component("transformer", paths):
            transformer = load_transformer(
                paths.transformer_dir,
                paths.action_checkpoint,
                dtype=transformer_dtype,
                device=device,
                attention_backend=attention_backend,
            )
        if weights == "fp8":
            quantize_blocks(transformer, matmul_for(device))
        if compile:
            transformer.compile_blocks()
        with component("VAE", paths):
            vae = load_vae(paths.vae_dir, device=device, dtype=torch.float32)
        with component("text/vision encoders", paths):
            encoders = ConditionEncoders.from_model_dir(
                paths.root, encoders_device or device, torch.float16 if cuda else torch.float32
            )
        with component("scheduler", paths):
            scheduler = FlowMatchScheduler.from_model_dir(paths.root, 1)
        return cls(variant, transformer, vae, encoders, scheduler.num_train_timesteps, paths)

    # -- stages -------------------------------------------------------------------------------------

    def recipe(self, options: GenerationOptions) -> tuple[int, float]:
        defaults = variants.get(self.variant)
        steps = options.steps or defaults.steps
        guidance = options.guidance if options.guidance is not None else defaults.guidance
        return steps, guidance

    def scheduler(self, steps: int) -> FlowMatchScheduler:
        return FlowMatchScheduler(steps, num_train_timesteps=self.num_train_timesteps)

    def refuse_super_resolution(self) -> None:
        """For paths with no finished video to super-resolve (a live stream)."""
        raise GenerationError(
            "the 720p super-resolution stage runs on a finished video; a live stream has none",
            "generate the video with `worldplay generate --sr`",
        )

    def check_super_resolution(self, num_latents: int, width: int, height: int) -> None:
        """Refuse, before anything runs, an SR request the stage cannot serve or whose weights are missing."""
        problem = sr.unsupported(self.variant, num_latents, width, height)
        if problem is not None:
            raise GenerationError(*problem)
        if self.super_resolution is None and (self.paths is None or not self.paths.has_sr):
            where = f" in {self.paths.root}" if self.paths is not None else ""
            raise GenerationError(
                f"the 720p super-resolution weights are not{where}",
                f"run `{download_command(sr.DOWNLOAD_PIECE, self.paths.root if self.paths else None)}`, "
                "or generate without --sr",
            )

    def super_resolution_stage(self) -> SuperResolution:
        """The SR transformer and upsampler, loaded beside the 480p model on first use."""
        if self.super_resolution is None:
            with component("super-resolution weights", self.paths):
                self.super_resolution = SuperResolution.load(
                    self.paths.sr_transformer_dir,
                    self.paths.sr_upsampler_dir,
                    self.device,
                    self.transformer.dtype,
                    self.transformer.attention_processor.backend,
                )
        return self.super_resolution

    def check_length(self, num_latents: int) -> None:
        from trajectories.latents import latents_to_frames, nearest_valid_latents

        chunk = self.chunk_latents
        if num_latents % chunk == 0 and num_latents >= chunk:
            return
        below, above = nearest_valid_latents(self.variant, num_latents)
        options = [f"{latents_to_frames(count)} frames ({count} latents)" for count in (below, above) if count]
        raise GenerationError(
            f"variant {self.variant} generates {chunk}-latent chunks; a trajectory of {num_latents} latents "
            f"({latents_to_frames(num_latents)} frames) is not a multiple of {chunk}",
            "use " + " or ".join(options),
        )

    @torch.inference_mode()
    def prepare(
        self,
        prompt: str,
        image: Image.Image | np.ndarray,
        trajectory,
        options: GenerationOptions = GenerationOptions(),
        noise: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
    ) -> Prepared:
        """Encode everything the rollout conditions on. `trajectory` is a `trajectories.Trajectory`;
        `noise` [1, C, T, h, w] replaces the seeded noise, `points` [M, 3] the seeded memory point cloud."""
        started = time.perf_counter()
        self.check_length(trajectory.num_latents)
        steps, guidance = self.recipe(options)
        image = as_pil(image)
        width, height = generation_size(image, options.width, options.height)
        if options.super_resolution:
            self.check_super_resolution(trajectory.num_latents, width, height)
        spatial = self.vae.config.ffactor_spatial
        latent_h, latent_w = height // spatial, width // spatial
        num_latents = trajectory.num_latents
        channels = self.transformer.config.in_channels
        device = self.device

        # 1. condition latent of the reference image on frame 0, and the mask marking it
        cond = torch.zeros(1, channels + 1, num_latents, latent_h, latent_w, device=device)
        cond[:, :, :1] = self.image_condition(image, width, height)

        # 2. text / glyph / vision states (with guidance the branches are [negative, positive]) and, for AR,
        #    their text K/V
        text_started = time.perf_counter()
        conditioning = self.conditioning(prompt, image, options.negative_prompt, guided=guidance > 1.0)
        text_s = time.perf_counter() - text_started

        # 3. cameras and actions per latent
        w2c = torch.tensor(trajectory.viewmats(), dtype=torch.float64)
        viewmats, intrinsics, actions = trajectory_cameras(trajectory, device, options.round_cameras)

        # 4. noise for the whole video, from a CPU generator so a seed means the same video everywhere
        shape = (1, channels, num_latents, latent_h, latent_w)
        if noise is None:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(options.seed), dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise GenerationError(f"injected noise has shape {list(noise.shape)}, expected {list(shape)}")
        if points is None:
            points = sample_points_in_sphere(seed=options.memory_seed)
        inputs = RolloutInputs(
            noise=noise.float().to(device),
            cond=cond,
            viewmats=viewmats,
            intrinsics=intrinsics,
            actions=actions,
            w2c=w2c,
            prompts=conditioning.prompts,
            points=points,
            text_caches=conditioning.text_caches,
        )
        return Prepared(inputs, width, height, steps, guidance, time.perf_counter() - started, text_s)

    def image_condition(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        """The condition frame of the reference image: [1, C + 1, 1, h, w], its scaled latent | mask 1
        (kept in the conditioning cache)."""
        key = ("image", image_key(image), width, height)
        condition = self.conditioning_cache.get(key)
        if condition is None:
            with self._vae_autocast():
                pixels = image_to_video_tensor(image, width, height).to(self.device)
                image_latent = self.vae.encode(pixels).float() * self.vae.config.scaling_factor
            mask = torch.ones_like(image_latent[:, :1])
            condition = torch.cat([image_latent, mask], dim=1)
            self.conditioning_cache.put(key, condition, condition.nbytes)
        return condition

    @torch.inference_mode()
    def conditioning(
        self,
        prompt: str,
        image: Image.Image,
        negative_prompt: str,
        guided: bool,
        base_size: int = RESOLUTION_BASE["480p"],
    ) -> Conditioning:
        """The encoder states of `prompt` (and of `negative_prompt` when `guided`) with the image's SigLIP
        tokens, plus their text K/V for the AR variants: from the conditioning cache, or computed and kept."""
        key = self.conditioning_key(prompt, image, negative_prompt, guided, base_size)
        conditioning = self.conditioning_cache.get(key)
        if conditioning is None:
            prompts = self.encode_prompt(prompt, image, negative_prompt, guided, base_size)
            text_caches = None
            if variants.get(self.variant).model_type == "ar":
                text_caches = [self.transformer.forward_text(embeddings, AR_TEXT_TIMESTEP) for embeddings in prompts]
            conditioning = Conditioning(prompts, text_caches)
            self.conditioning_cache.put(key, conditioning, conditioning.nbytes)
        return conditioning

    @staticmethod
    def conditioning_key(
        prompt: str, image: Image.Image, negative_prompt: str, guided: bool, base_size: int = RESOLUTION_BASE["480p"]
    ) -> tuple:
        """The conditioning cache's key of `conditioning(...)` with the same arguments."""
        return ("prompt", prompt, negative_prompt, guided, base_size, image_key(image))

    def encode_prompt(
        self,
        prompt: str,
        image: Image.Image,
        negative_prompt: str,
        guided: bool,
        base_size: int = RESOLUTION_BASE["480p"],
    ) -> list[PromptEmbeddings]:
        """Text, glyph and vision states of one prompt: batch-1 embeddings, [negative, positive] if `guided`;
        the SigLIP crop is the image's bucket of about `base_size`² pixels."""
        states = self.encoders.encode(
            prompt,
            image=image,
            negative_prompt=negative_prompt,
            guidance=guided,
            base_size=base_size,
            vision=self.vision_states(image, base_size),
        )
        return split_prompts(states, self.device)

    def vision_states(self, image: Image.Image, base_size: int) -> torch.Tensor:
        """The image's SigLIP states (`ConditionEncoders.encode_image`), from `vision_cache` or computed and kept;
        keyed by where the encoder runs too, since a memory profile may move it."""
        encoder = self.encoders.vision.model
        key = ("vision", image_key(image), base_size, str(encoder.device), encoder.dtype)
        states = self.vision_cache.get(key)
        if states is None:
            states = self.encoders.encode_image(image, base_size)
            self.vision_cache.put(key, states, states.nbytes)
        return states

    def model_cameras(
        self, w2c: torch.Tensor, normalized_k: np.ndarray, round_cameras: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's `viewmats` [1, N, 4, 4] and intrinsics [1, N, 3, 3] from w2c float64 and normalised K
        (`model_cameras` on this pipeline's device)."""
        return model_cameras(w2c, normalized_k, self.device, round_cameras)

    def offloadable_encoders(self) -> list[torch.nn.Module]:
        """The models a memory profile may keep in host memory outside the encode stage."""
        return [encoder.model for encoder in (self.encoders.prompt, self.encoders.glyph, self.encoders.vision)]

    def transformer_blocks(self) -> torch.nn.ModuleList:
        """The blocks a streamed memory profile keeps one at a time on the GPU (sequence parallel unwrapped)."""
        return getattr(self.transformer, "model", self.transformer).double_blocks

    def decode_streaming(self, decoder: StreamingDecoder, latents: torch.Tensor, truncate_pixels: bool) -> np.ndarray:
        """The uint8 frames [F, H, W, 3] of the next (scaled) latents [1, C, t, h, w] of a streamed video."""
        with torch.inference_mode(), self._vae_autocast():
            pieces = [
                to_uint8_frames(piece, truncate_pixels)
                for piece in decoder.push(latents / self.vae.config.scaling_factor)
            ]
        return np.concatenate(pieces)

    def chunk_flops(self, prepared: Prepared, chunk_latents: int, context_latents: int) -> Flops:
        """The analytic work of one chunk of this video (its grid, text length, steps and guidance branches)."""
        inputs = prepared.inputs
        tokens = tokens_per_latent(self.transformer.config, *inputs.noise.shape[-2:])
        text = max(text_tokens(prompt) for prompt in inputs.prompts)
        count = bi_chunk_flops if variants.get(self.variant).model_type == "bi" else ar_chunk_flops
        return count(
            self.transformer.config, tokens, chunk_latents, context_latents, text, prepared.steps, len(inputs.prompts)
        )

    def rollout(
        self, prepared: Prepared, options: GenerationOptions = GenerationOptions(), on_step: StepCallback | None = None
    ) -> Iterator[ChunkResult]:
        """Denoised chunks in order (under inference mode, one at a time)."""
        window = {}
        if options.attention_window is not None:
            if variants.get(self.variant).model_type == "bi":
                raise ValueError("the attention sink and local window are for the AR variants")
            options.attention_window.check_chunks(self.chunk_latents)
            window = {"attention_window": options.attention_window}
        rollout = bi_rollout if variants.get(self.variant).model_type == "bi" else ar_rollout
        chunks = rollout(
            self.transformer,
            self.scheduler(prepared.steps),
            prepared.inputs,
            prepared.guidance_scale,
            self.chunk_latents,
            options.round_latents,
            on_step,
            **window,
        )
        while True:
            with torch.inference_mode():
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def decode(self, latents: torch.Tensor, tiling: SpatialTiling | None = None) -> torch.Tensor:
        """Whole (scaled) latent video [1, C, T, h, w] -> pixels [1, 3, F, H, W] in about [-1, 1]."""
        with torch.inference_mode(), self._vae_autocast():
            return self.vae.decode(latents / self.vae.config.scaling_factor, tiling).float()

    def _vae_autocast(self):
        # the official VAE runs under fp16 autocast on the GPU
        if next(self.vae.parameters()).device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    # -- the whole thing ----------------------------------------------------------------------------

    def frames(
        self,
        prepared: Prepared,
        options: GenerationOptions,
        result: GenerationResult,
        on_step: StepCallback | None = None,
        decode: bool = True,
    ) -> Iterator[np.ndarray]:
        """uint8 [H, W, 3] frames of the video, each chunk decoded as soon as it is denoised (or all at
        the end without `options.streaming_decode`; none without `decode`); fills `result` with latents,
        chunks and timings."""
        decoder = StreamingDecoder(self.vae, options.tiling)
        finished: list[torch.Tensor] = []
        stages = result.stages
        for chunk in self.rollout(prepared, options, on_step):
            record = ChunkRecord(chunk.index, (chunk.start, chunk.end), chunk.context, chunk.context_s, chunk.denoise_s)
            record.tflop = self.chunk_flops(prepared, chunk.end - chunk.start, len(chunk.context)).total / 1e12
            result.chunks.append(record)
            stages["context"] = stages.get("context", 0.0) + chunk.context_s
            stages["denoise"] = stages.get("denoise", 0.0) + chunk.denoise_s
            finished.append(chunk.latents)
            if not (decode and options.streaming_decode):
                continue
            started = time.perf_counter()
            frames = self.decode_streaming(decoder, chunk.latents, options.truncate_pixels)
            record.decode_s = time.perf_counter() - started
            stages["decode"] = stages.get("decode", 0.0) + record.decode_s
            yield from frames
        result.latents = torch.cat(finished, dim=2)
        if decode and not options.streaming_decode:
            started = time.perf_counter()
            video = to_uint8_frames(self.decode(result.latents, options.tiling), options.truncate_pixels)
            stages["decode"] = time.perf_counter() - started
            yield from video

    def super_resolve(
        self,
        prompt: str,
        image: Image.Image,
        prepared: Prepared,
        options: GenerationOptions,
        result: GenerationResult,
        on_step: StepCallback | None = None,
        pre_sr_video: str | None = None,
    ) -> Iterator[np.ndarray]:
        """uint8 frames of the 720p video of `result.latents` (the finished 480p latents), decoded tiled
        a few latents at a time; fills `result.super_resolution` (naming the kept 480p video, if any) and
        its stage timings."""
        stage = self.super_resolution_stage()
        started = time.perf_counter()
        width, height = sr.output_size(prepared.width, prepared.height)
        spatial = self.vae.config.ffactor_spatial
        size = (height // spatial, width // spatial)
        latents = result.latents
        # 1. the SR noise, then the LQ noise, from one CPU generator seeded like the 480p noise
        generator = torch.Generator().manual_seed(options.seed)
        shape = (1, stage.latent_channels, latents.shape[2], *size)
        noise = torch.randn(shape, generator=generator)
        lq_noise = torch.randn(shape, generator=generator)
        # 2. the condition: the image at the 720p size, the upsampled noisy 480p latents; the prompt alone
        lq = stage.lq_condition(latents, size, lq_noise.to(latents.device))
        condition, zeroed = sr_condition(self.image_condition(image, width, height), lq)
        (positive,) = self.encode_prompt(prompt, image, "", guided=False, base_size=SUPER_RESOLUTION_BASE)
        stages = result.stages
        stages["sr_encode"] = time.perf_counter() - started

        # 3. the SR loop, reported as one chunk of 6 steps
        def report(done: int, total: int) -> None:
            if on_step is not None:
                on_step(StepEvent(0, 1, done, total))

        started = time.perf_counter()
        latents = stage.denoise(noise.to(condition.device), condition, zeroed, positive, report)
        stages["sr_denoise"] = time.perf_counter() - started
        result.super_resolution = {
            "width": width,
            "height": height,
            "steps": sr.STEPS,
            "shift": sr.SHIFT,
            "strength": sr.STRENGTH,
            "guidance_scale": 1.0,
            "latents": list(latents.shape[2:]),
            "pre_sr_video": pre_sr_video,
        }
        # 4. decode streamed a chunk of latents at a time; on a GPU tiled, as the official stage decodes SR
        #    latents (a 720p frame's working set is what tiling is for; host memory has room for it whole)
        tiling = options.tiling or (SpatialTiling() if latents.device.type == "cuda" else None)
        decoder = StreamingDecoder(self.vae, tiling)
        stages["sr_decode"] = 0.0
        for start in range(0, latents.shape[2], self.chunk_latents):
            started = time.perf_counter()
            frames = self.decode_streaming(
                decoder, latents[:, :, start : start + self.chunk_latents], options.truncate_pixels
            )
            stages["sr_decode"] += time.perf_counter() - started
            yield from frames

    def generate(
        self,
        prompt: str,
        image: Image.Image | np.ndarray,
        trajectory,
        output: str | Path | None,
        options: GenerationOptions = GenerationOptions(),
        *,
        noise: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
        on_stage: Callable[[str], None] | None = None,
        frame_filter: Callable[[int, np.ndarray], np.ndarray] | None = None,
        write_video: Callable | None = None,
        pre_sr_output: str | Path | None = None,
    ) -> GenerationResult:
        """Generate and write `output` (an mp4, written atomically; None: decode but keep no file).

        With `options.super_resolution`, `output` is the 720p video and `pre_sr_output` (when given) keeps
        the 480p one. `frame_filter(index, frame)` post-processes each uint8 frame of `output` (e.g. a
        keyboard overlay); `write_video(frames, path, fps=...)` replaces the default writer
        (`worker.video.write_video`).
        """
        if write_video is None:
            from worker.video import write_video
        if on_stage:
            on_stage("encode")
        image = as_pil(image)
        prepared = self.prepare(prompt, image, trajectory, options, noise, points)
        result = GenerationResult(
            video=Path(output) if output is not None else None,
            num_frames=trajectory.num_frames,
            width=prepared.width,
            height=prepared.height,
            fps=options.fps,
            steps=prepared.steps,
            guidance_scale=prepared.guidance_scale,
            stages={"encode": prepared.encode_s, "text": prepared.text_s},
        )
        if on_stage:
            on_stage("generate")
        keep_pre_sr = options.super_resolution and pre_sr_output is not None
        frames = self.frames(prepared, options, result, on_step, decode=keep_pre_sr or not options.super_resolution)
        if options.super_resolution:
            if keep_pre_sr:
                write_video(frames, Path(pre_sr_output), fps=options.fps)
            else:
                for _ in frames:
                    pass
            if on_stage:
                on_stage("super-resolution")
            kept = Path(pre_sr_output).name if keep_pre_sr else None
            frames = self.super_resolve(prompt, image, prepared, options, result, on_step, kept)
        if frame_filter is not None:
            frames = (frame_filter(index, frame) for index, frame in enumerate(frames))
        if output is None:
            for _ in frames:
                pass
            return result
        write_video(frames, Path(output), fps=options.fps)
        return result


# ---------------------------------------------------------------------------------------------------


def model_cameras(
    w2c: torch.Tensor, normalized_k: np.ndarray, device: torch.device, round_cameras: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's `viewmats` [1, N, 4, 4] and intrinsics [1, N, 3, 3] (float32; bf16-rounded like the
    official pipelines unless `round_cameras` is off) from w2c float64 and normalised K."""
    viewmats = w2c.float()[None].to(device)
    intrinsics = torch.tensor(normalized_k, dtype=torch.float32)[None].to(device)
    if round_cameras:
        viewmats, intrinsics = (matrix.to(torch.bfloat16).float() for matrix in (viewmats, intrinsics))
    return viewmats, intrinsics


def trajectory_cameras(
    trajectory, device: torch.device, round_cameras: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A `trajectories.Trajectory` as every model family sees it: viewmats [1, N, 4, 4], normalised
    intrinsics [1, N, 3, 3] and action ids [1, N] (int64), one per latent."""
    w2c = torch.tensor(trajectory.viewmats(), dtype=torch.float64)
    viewmats, intrinsics = model_cameras(w2c, trajectory.normalized_K(), device, round_cameras)
    actions = torch.tensor(trajectory.actions, dtype=torch.int64)[None].to(device)
    return viewmats, intrinsics, actions


def split_prompts(states: ConditionStates, device: torch.device) -> list[PromptEmbeddings]:
    """Encoder states (batch [negative, positive] or [positive]) -> one batch-1 `PromptEmbeddings` each."""
    return [
        PromptEmbeddings(
            llm=states.text[index : index + 1].to(device),
            llm_mask=states.text_mask[index : index + 1].to(device),
            byt5=states.byt5[index : index + 1].to(device),
            byt5_mask=states.byt5_mask[index : index + 1].to(device),
            vision=states.vision[index : index + 1].to(device),
        )
        for index in range(states.text.shape[0])
    ]


def check_components(transformer: WorldPlayTransformer, vae: HunyuanVideo15VAE, encoders: ConditionEncoders) -> None:
    """Refuse components that cannot work together (e.g. a tiny VAE next to the real transformer)."""
    config = transformer.config
    pairs = [
        ("VAE latent channels", vae.config.latent_channels, "transformer in_channels", config.in_channels),
        (
            "text encoder width",
            encoders.prompt.model.config.hidden_size,
            "transformer text_states_dim",
            config.text_states_dim,
        ),
        ("SigLIP width", encoders.vision.hidden_size, "transformer vision_states_dim", config.vision_states_dim),
        ("byT5 width", encoders.glyph.hidden_size, "transformer byT5 input", config.byt5_states_dim),
    ]
    mismatched = [f"{left} {a} != {right} {b}" for left, a, right, b in pairs if a != b]
    if mismatched:
        raise ModelDirError(
            "model components do not belong together: " + "; ".join(mismatched),
            "the model directory mixes pieces of different models; re-download it with `worldplay download`",
        )


class component:
    """Turn a failure while loading one component into a `ModelDirError` naming it, with a repair hint."""

    def __init__(self, what: str, paths: ModelPaths):
        self.what = what
        self.paths = paths

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, Exception) or isinstance(error, ModelDirError):
            return False
        hint = getattr(error, "hint", "") or (
            f"the files may be truncated or corrupt; run `{download_command(self.paths.variant, self.paths.root, ' --repair')}`"
        )
        # the message without any hint suffix the error's own __str__ adds
        lines = str(error.args[0] if error.args else "").strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        raise ModelDirError(f"cannot load the {self.what} from {self.paths.root}: {detail}", hint) from error
