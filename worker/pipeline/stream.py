"""An open-ended autoregressive rollout: chunk after chunk along cameras decided as it plays (live sessions).

`ARStream` is `ar_rollout` without a length: each `step` takes the next chunk's cameras, actions and
prompt and returns its denoised latents and decoded frames, with the same per-chunk body
(`worker.pipeline.rollout.ar_chunk`): memory selection over every latent generated so far, the context
K/V rebuilt from the selected clean latents, the chunk denoised against [text, context] with the
variant's steps and guidance branches, then the streaming VAE decoder (its causal cache carried from
chunk to chunk) turns just this chunk into frames.

What it keeps between chunks: the denoised latents and per-latent cameras/actions (the memory can pick
any of them: that is the only state that grows, by one chunk of latents per step; with an attention
window, `GenerationOptions.attention_window`, each chunk's context is its sink and local window instead,
and a chunk no later window can reach is dropped, so nothing grows), the image condition,
the decoder's cache (fixed size) and the seeded noise generator. Each prompt's encoder states and text
K/V come from the pipeline's bounded conditioning cache (`WorldPlayPipeline.conditioning`, the one the
generations of a resident worker use): a prompt change encodes the new prompt once, going back to a
recent one (or a prompt a generation used) encodes nothing. Decoded frames are handed out, never kept.

Noise: chunk k's initial latents are the k-th draw of shape [1, C, chunk_latents, h, w] from one CPU
generator seeded with the session's seed, so a seed means the same session on any device. This is not
the noise of a fixed-length `generate` with that seed (whose one draw covers the whole video and so
depends on its length); given the stream's noise (`next_noise` of a fresh stream, chunk after chunk),
`generate` reproduces the stream exactly.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch._subclasses.fake_tensor import is_fake

from worker.models.vae import StreamingDecoder
from worker.pipeline.image import as_pil, generation_size
from worker.pipeline.memory import sample_points_in_sphere, select_context_latents
from worker.pipeline.pipeline import Conditioning, GenerationError, GenerationOptions, WorldPlayPipeline
from worker.pipeline.rollout import ARFrames, ChunkResult, ar_chunk, working_latents
from worldplay_cli.contract import variants


@dataclass
class StreamChunk:
    """One generated chunk: its denoised latents, its frames and what it cost."""

    result: ChunkResult  # index, latent range, context, latents [1, C, chunk_latents, h, w], denoise timings
    frames: np.ndarray  # [num_frames, H, W, 3] uint8: 4 * chunk_latents - 3 for chunk 0, else 4 * chunk_latents
    encode_s: float  # encoding a prompt not seen recently (0 otherwise)
    decode_s: float


class ARStream:
    """One open-ended AR rollout of an autoregressive variant of `pipeline` from `image` (see the module)."""

    def __init__(
        self,
        pipeline: WorldPlayPipeline,
        image: Image.Image | np.ndarray,
        options: GenerationOptions = GenerationOptions(),
    ):
        if options.super_resolution:
            pipeline.refuse_super_resolution()
        if variants.get(pipeline.variant).model_type != "ar":
            autoregressive = [record.name for record in variants.all_variants() if record.model_type == "ar"]
            raise GenerationError(
                f"variant {pipeline.variant} is bidirectional; a stream needs an autoregressive one",
                f"choose one of {', '.join(autoregressive)}",
            )
        self.pipeline = pipeline
        self.options = options
        self.image = as_pil(image)
        self.width, self.height = generation_size(self.image, options.width, options.height)
        self.steps, self.guidance_scale = pipeline.recipe(options)
        self.scheduler = pipeline.scheduler(self.steps)
        self.chunk_latents = pipeline.chunk_latents
        self.window = options.attention_window
        if self.window is not None:
            try:
                self.window.check_chunks(self.chunk_latents)
            except ValueError as error:
                raise GenerationError(str(error), "choose whole chunks of the variant") from None
        self.points = sample_points_in_sphere(seed=options.memory_seed)
        self.decoder = StreamingDecoder(pipeline.vae, options.tiling)
        self._generator = torch.Generator().manual_seed(options.seed)
        with torch.inference_mode():
            self._image_cond = pipeline.image_condition(self.image, self.width, self.height)
        channels, spatial = pipeline.transformer.config.in_channels, pipeline.vae.config.ffactor_spatial
        self.chunk_shape = (1, channels, self.chunk_latents, self.height // spatial, self.width // spatial)
        # per kept chunk (by index): denoised latents, model cameras and actions; per latent: w2c for the memory
        self._latents: dict[int, torch.Tensor] = {}
        self._cameras: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._w2c = torch.zeros(0, 4, 4, dtype=torch.float64)
        self._num_chunks = 0

    @property
    def num_chunks(self) -> int:
        return self._num_chunks

    @property
    def kept_chunks(self) -> list[int]:
        """The chunks whose latents the stream still holds (all of them without an attention window)."""
        return list(self._latents)

    @property
    def num_latents(self) -> int:
        return self.num_chunks * self.chunk_latents

    def knows(self, prompt: str) -> bool:
        """Whether `prompt`'s conditioning is cached (a `step` with it encodes nothing)."""
        return self._conditioning_key(prompt) in self.pipeline.conditioning_cache

    def next_noise(self) -> torch.Tensor:
        """The next chunk's initial latents [1, C, chunk_latents, h, w] from the seeded generator."""
        return torch.randn(self.chunk_shape, generator=self._generator, dtype=torch.float32)

    def step(
        self,
        c2w: np.ndarray,
        intrinsics: np.ndarray,
        actions: np.ndarray,
        prompt: str,
        on_step: Callable[[int], None] | None = None,
    ) -> StreamChunk:
        """Generate the next chunk. `c2w` [chunk_latents, 4, 4] and normalised `intrinsics` [chunk_latents,
        3, 3] float64, `actions` [chunk_latents] int64 are the chunk's own latents (chunk 0 starts at the
        image, c2w identity, action 0); `on_step(step)` follows each denoising step."""
        c2w, intrinsics, actions = chunk_inputs(c2w, intrinsics, actions, self.chunk_latents)
        noise = self.next_noise()
        encode_s = self.prepare_prompt(prompt)
        text_caches = self._conditioning(prompt).text_caches
        with torch.inference_mode():
            return self._step(c2w, intrinsics, actions, text_caches, noise, on_step, encode_s)

    def _step(self, c2w, intrinsics, actions, text_caches, noise, on_step, encode_s) -> StreamChunk:
        pipeline, device = self.pipeline, self.pipeline.device
        index, start = self.num_chunks, self.num_latents
        end = start + self.chunk_latents
        # 1. this chunk's cameras join the history the memory selects from
        # inverted as `trajectories` inverts (numpy), so a played path and its saved trajectory agree bit for bit
        w2c = torch.from_numpy(np.linalg.inv(c2w))
        viewmats, model_intrinsics = pipeline.model_cameras(w2c, intrinsics, self.options.round_cameras)
        cameras = (viewmats, model_intrinsics, torch.tensor(actions)[None].to(device))
        if self.window is None:
            self._w2c = torch.cat([self._w2c, w2c])
            context = select_context_latents(self._w2c, start, self.chunk_latents, self.points)
        else:
            context = self.window.context_latents(start, self.chunk_latents)
        # 2. the shared AR chunk body, against this prompt's text K/V
        current = working_latents(noise.to(device), self.options.round_latents)
        result = ChunkResult(index, start, end, context, current)
        chunk = ARFrames(current, self._cond(list(range(start, end))), *cameras)
        ar_chunk(
            pipeline.transformer,
            self.scheduler,
            text_caches,
            self._frames(context) if context else None,
            chunk,
            result,
            self.guidance_scale,
            self.options.round_latents,
            on_step,
        )
        self._latents[index] = result.latents
        self._cameras[index] = cameras
        self._num_chunks += 1
        self._evict()
        # 3. just this chunk through the streaming decoder
        started = time.perf_counter()
        frames = pipeline.decode_streaming(self.decoder, result.latents, self.options.truncate_pixels)
        return StreamChunk(result, frames, encode_s, time.perf_counter() - started)

    def _evict(self) -> None:
        """Drop the chunks the next chunk's window leaves out: windows only move forward, so none needs them."""
        if self.window is None:
            return
        keep = set(self.window.context_latents(self.num_latents, self.chunk_latents))
        for index in list(self._latents):
            if index * self.chunk_latents not in keep:
                del self._latents[index], self._cameras[index]

    def prepare_prompt(self, prompt: str) -> float:
        """Make `prompt`'s conditioning ready (encoded unless cached); returns the seconds spent encoding."""
        if self.knows(prompt):
            return 0.0
        started = time.perf_counter()
        self._conditioning(prompt)
        return time.perf_counter() - started

    def _conditioning(self, prompt: str) -> Conditioning:
        guided = self.guidance_scale > 1.0
        return self.pipeline.conditioning(prompt, self.image, self.options.negative_prompt, guided)

    def _conditioning_key(self, prompt: str) -> tuple:
        guided = self.guidance_scale > 1.0
        return self.pipeline.conditioning_key(prompt, self.image, self.options.negative_prompt, guided)

    def _cond(self, indices: list[int]) -> torch.Tensor:
        """Condition channels of latents `indices`: the image's on latent 0, zeros elsewhere."""
        cond = torch.zeros(
            (*self._image_cond.shape[:2], len(indices), *self._image_cond.shape[3:]), device=self._image_cond.device
        )
        for position, index in enumerate(indices):
            if index == 0:
                cond[:, :, position : position + 1] = self._image_cond
        return cond

    def _frames(self, indices: list[int]) -> ARFrames:
        """Denoised latents `indices` with their conditions, gathered from the per-chunk history."""
        count = self.chunk_latents

        def gather(parts: dict[int, torch.Tensor], dim: int) -> torch.Tensor:
            pieces = [parts[index // count].narrow(dim, index % count, 1) for index in indices]
            return torch.cat(pieces, dim=dim)

        viewmats, intrinsics, actions = (
            {chunk: camera[part] for chunk, camera in self._cameras.items()} for part in range(3)
        )
        return ARFrames(
            gather(self._latents, 2),
            self._cond(indices),
            gather(viewmats, 1),
            gather(intrinsics, 1),
            gather(actions, 1),
        )


def chunk_inputs(
    c2w: np.ndarray, intrinsics: np.ndarray, actions: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stream step's cameras and actions as float64, float64, int64 arrays, refused unless they are the
    chunk's `count` latents."""
    c2w, intrinsics = np.asarray(c2w, dtype=np.float64), np.asarray(intrinsics, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.int64)
    if c2w.shape != (count, 4, 4) or intrinsics.shape != (count, 3, 3) or actions.shape != (count,):
        raise GenerationError(
            f"a chunk has {count} latents: got c2w {c2w.shape}, intrinsics {intrinsics.shape}, actions {actions.shape}",
            f"pass [{count}, 4, 4], [{count}, 3, 3] and [{count}]",
        )
    return c2w, intrinsics, actions


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage the garbage collector can reach in this process: weights,
    caches and whatever a session holds (the bounded-memory measure of live play; deterministic, unlike RSS)."""
    gc.collect()  # what only a reference cycle keeps is garbage, not state
    seen: dict[tuple[str, int], int] = {}
    for item in gc.get_objects():
        # a compiler's fake tensors (torch.compile ran in this process, e.g. a --compile job) hold no memory
        if torch.is_tensor(item) and item.device.type != "meta" and not is_fake(item):
            storage = item.untyped_storage()
            seen[(str(item.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())
