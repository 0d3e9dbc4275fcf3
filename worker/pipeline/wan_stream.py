"""The WAN-5B family's open-ended rollout for live sessions: `ARStream`'s surface on `wan_ar_rollout`'s chunk.

Each `step` takes the next 4-latent chunk's cameras, actions and prompt and runs the rollout's own chunk
body (`worker.pipeline.wan_rollout.wan_chunk`): the WAN memory rule over every latent generated so far, the
context K/V rebuilt from scratch from the selected clean latents, the distilled (or the variant's) Euler
steps; then the Wan2.2 streaming decoder (its causal cache carried from chunk to chunk) turns just this chunk
into frames. t2v without an image (chunk 0 generates all 4 latents), i2v with one (latent 0 is the image's
posterior sample, kept clean in chunk 0).

What it keeps between chunks: the denoised latents and per-latent model cameras, actions and memory
cameras, all of them (the FOV rule may pick any earlier 4-latent clip, so no latent can be dropped; a
latent is small, 48 x h x w, and no K/V outlives its chunk), the decoder's cache (fixed size), the UMT5
states of the last few prompts (a prompt change encodes once; going back to a recent one encodes nothing),
the current prompt's cross-attention K/V and the seeded noise generator. Frames are handed out, never kept.

Noise: one CPU generator seeded with the session's seed draws the image's posterior sample (i2v) first,
then chunk k's initial latents as its k-th draw of [1, C, 4, h, w]; given that noise (`next_noise` of a
fresh stream, chunk after chunk) `wan_ar_rollout` and `WanPipeline.generate` reproduce the stream exactly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from worker.pipeline.image import as_pil
from worker.pipeline.memory import sample_points_in_sphere
from worker.pipeline.pipeline import GenerationOptions, model_cameras
from worker.pipeline.stream import StreamChunk, chunk_inputs
from worker.pipeline.wan_pipeline import WanPipeline
from worker.pipeline.wan_rollout import CHUNK_LATENTS, DISTILLED_TIMESTEPS, check_steps, model_inputs, wan_chunk

# UMT5 states kept for recent prompts (4 MB each at the released width): enough to go back and forth.
RECENT_PROMPTS = 4


class WanStream:
    """One open-ended rollout of a WAN variant of `pipeline`, from `image` (i2v) or none (t2v)."""

    def __init__(
        self,
        pipeline: WanPipeline,
        image: Image.Image | np.ndarray | None,
        options: GenerationOptions = GenerationOptions(),
    ):
        pipeline.check_options(options)
        self.pipeline = pipeline
        self.options = options
        self.width, self.height = pipeline.size(options)
        timesteps, self.steps = pipeline.timesteps(options)
        self.timesteps = check_steps(DISTILLED_TIMESTEPS if timesteps is None else timesteps)
        self.guidance_scale = 1.0
        self.chunk_latents = CHUNK_LATENTS
        self.points = sample_points_in_sphere()  # the rollout's seeded cloud
        self.decoder = pipeline.vae.stream_decoder()
        self._generator = torch.Generator().manual_seed(options.seed)
        image = as_pil(image) if image is not None else None
        self._first_latent = pipeline.first_latent(image, self.width, self.height, self._generator)
        scale = pipeline.vae.config.scale_factor_spatial
        channels = pipeline.transformer.config.in_channels
        self.chunk_shape = (1, channels, CHUNK_LATENTS, self.height // scale, self.width // scale)
        self._states: OrderedDict[str, torch.Tensor] = OrderedDict()  # prompt -> UMT5 states
        self._text: tuple[str, object] | None = None  # the current prompt and its cross-attention K/V
        # every latent so far (model dtype; capacity doubles) and its model cameras; w2c for the memory
        self._latents: torch.Tensor | None = None
        self._cameras: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._w2c = torch.zeros(0, 4, 4)
        self._num_chunks = 0

    @property
    def num_chunks(self) -> int:
        return self._num_chunks

    @property
    def num_latents(self) -> int:
        return self.num_chunks * self.chunk_latents

    def knows(self, prompt: str) -> bool:
        """Whether `prompt`'s states are kept (a `step` with it runs no text encoder)."""
        return prompt in self._states

    def next_noise(self) -> torch.Tensor:
        """The next chunk's initial latents [1, C, 4, h, w] fp32 from the seeded generator."""
        return torch.randn(self.chunk_shape, generator=self._generator, dtype=torch.float32)

    def prepare_prompt(self, prompt: str) -> float:
        """Encode `prompt` unless its states are kept; returns the seconds spent encoding."""
        if self.knows(prompt):
            self._states.move_to_end(prompt)
            return 0.0
        started = time.perf_counter()
        self._states[prompt] = self.pipeline.encode_prompt(prompt)
        while len(self._states) > RECENT_PROMPTS:
            self._states.popitem(last=False)
        return time.perf_counter() - started

    def step(
        self,
        c2w: np.ndarray,
        intrinsics: np.ndarray,
        actions: np.ndarray,
        prompt: str,
        on_step: Callable[[int], None] | None = None,
    ) -> StreamChunk:
        """Generate the next chunk. `c2w` [4, 4, 4] and normalised `intrinsics` [4, 3, 3] float64, `actions`
        [4] int64 are the chunk's own latents (chunk 0 starts at c2w identity, action 0); `on_step(step)`
        follows each denoising step."""
        c2w, intrinsics, actions = chunk_inputs(c2w, intrinsics, actions, self.chunk_latents)
        noise = self.next_noise()
        encode_s = self.prepare_prompt(prompt)
        with torch.inference_mode():
            return self._step(c2w, intrinsics, actions, self._text_context(prompt), noise, on_step, encode_s)

    def _step(self, c2w, intrinsics, actions, text, noise, on_step, encode_s) -> StreamChunk:
        pipeline, transformer = self.pipeline, self.pipeline.transformer
        index, start = self.num_chunks, self.num_latents
        # 1. this chunk's cameras join the history, converted as the batch rollout converts a trajectory's
        # (w2c inverted as `trajectories` inverts, numpy: a played path and its saved trajectory agree bit for bit)
        w2c = torch.from_numpy(np.linalg.inv(c2w))
        viewmats, lenses = model_cameras(w2c, intrinsics, torch.device("cpu"), self.options.round_cameras)
        cameras = model_inputs(transformer, viewmats[0], lenses[0], torch.tensor(actions))
        self._w2c = torch.cat([self._w2c, viewmats[0].float()])
        if self._cameras is not None:
            cameras = tuple(torch.cat([kept, new], dim=1) for kept, new in zip(self._cameras, cameras))
        self._cameras = cameras
        # 2. its initial latents join the buffer; the rollout's chunk body denoises them in place
        latents = self._room(start + self.chunk_latents)
        latents[:, :, start : start + self.chunk_latents] = noise.to(latents.device, latents.dtype)
        keep_first = index == 0 and self._first_latent is not None
        if keep_first:
            latents[:, :, :1] = self._first_latent.to(latents.device, latents.dtype)
        result = wan_chunk(
            transformer,
            index,
            latents,
            text,
            self._cameras,
            self._w2c,
            self.points,
            self.timesteps,
            keep_first=keep_first,
            on_step=on_step,
        )
        self._num_chunks += 1
        # 3. just this chunk through the streaming decoder
        started = time.perf_counter()
        frames = pipeline.decode_streaming(self.decoder, result.latents, self.options.truncate_pixels)
        return StreamChunk(result, frames, encode_s, time.perf_counter() - started)

    def _text_context(self, prompt: str):
        """The cross-attention K/V of `prompt` (kept for the current prompt only: they are per block)."""
        if self._text is None or self._text[0] != prompt:
            self._text = None  # freed before the next one is made
            with torch.inference_mode():
                self._text = (prompt, self.pipeline.transformer.encode_text(self._states[prompt]))
        return self._text[1]

    def _room(self, num_latents: int) -> torch.Tensor:
        """The latent buffer with room for `num_latents` (grown by doubling, so appending stays cheap)."""
        if self._latents is None or self._latents.shape[2] < num_latents:
            transformer = self.pipeline.transformer
            capacity = max(num_latents, 2 * (self._latents.shape[2] if self._latents is not None else 0))
            grown = torch.empty(
                (*self.chunk_shape[:2], capacity, *self.chunk_shape[3:]),
                dtype=transformer.dtype,
                device=transformer.device,
            )
            if self._latents is not None:
                grown[:, :, : self.num_latents] = self._latents[:, :, : self.num_latents]
            self._latents = grown
        return self._latents
