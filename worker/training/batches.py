"""Training samples: which latents of a clip, at which noise levels, with which prompt, and what is supervised.

All randomness of a sample comes from generators seeded by (run seed, step, micro-batch, rank, slot), so
a resumed run draws exactly the samples the uninterrupted run would have drawn, without saving any RNG
state. Clips are visited in a seeded permutation per epoch over the global sample counter.

AR samples (the official recipe, fact sheet §2.2-2.3):
- memory sample (probability `memory_probability`, clip long enough): a target chunk start `cur` (a multiple of
  the chunk, at least one window in), its temporal context (the latest `context_latents`), the first
  chunk and the best-overlapping retrieved 4-latent clips (`select_memory_frames`); history chunks are
  noised to t in `history_timesteps`, only the target chunk is supervised;
- window sample: the first `window_latents` latents, every chunk with its own noise level, all supervised.
BI samples: the first `window_latents` latents at one noise level.
With `data.curriculum` the window of a step's samples is the curriculum's; clips come from
`worker.training.sources` (one dataset, a weighted mix, or streamed shards).
The sampled latents get contiguous RoPE positions (temporal reframing); poses and actions are gathered
with the same indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from worker.models.transformer import PromptEmbeddings
from worker.pipeline.memory import sample_points_in_sphere, select_memory_frames
from worker.training.dataset import ClipTensors, PreparedDataset, PromptStates
from worldplay_cli.contract.training import ARMethod, BiMethod, DataSection, SelfForcingMethod, TimestepSampling

# Salts keep the different random streams of one sample independent (sources.py uses 1 and 3-5).
_SAMPLE = 2


@dataclass
class Batch:
    latents: torch.Tensor  # x0 [B, C, T, h, w]
    noise: torch.Tensor  # ε [B, C, T, h, w]
    sigmas: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T] 1 = supervised
    image_cond: torch.Tensor  # [B, C, 1, h, w]
    viewmats: torch.Tensor  # [B, T, 4, 4]
    intrinsics: torch.Tensor  # [B, T, 3, 3]
    actions: torch.Tensor  # [B, T]
    prompt: PromptEmbeddings
    memory: torch.Tensor  # [B] bool, which samples are memory samples

    def to(self, device) -> Batch:
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "latents",
                "noise",
                "sigmas",
                "loss_mask",
                "image_cond",
                "viewmats",
                "intrinsics",
                "actions",
                "memory",
            )
        }
        return Batch(prompt=prompt_to(self.prompt, device), **moved)

    def model_input(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden_states [B, 2C+1, T, h, w] = [x_t | cond | mask], the velocity target ε - x0)."""
        sigma = self.sigmas[:, None, :, None, None]
        noisy = (1 - sigma) * self.latents + sigma * self.noise
        return with_condition(noisy, self.image_cond), self.noise - self.latents


def prompt_to(prompt: PromptEmbeddings, device) -> PromptEmbeddings:
    parts = (prompt.llm, prompt.llm_mask, prompt.byt5, prompt.byt5_mask, prompt.vision)
    return PromptEmbeddings(*(None if part is None else part.to(device) for part in parts))


def with_condition(noisy: torch.Tensor, image_cond: torch.Tensor) -> torch.Tensor:
    """[noisy | cond | mask]: the image latent and a mask of ones on the first latent, zeros elsewhere."""
    cond = torch.zeros_like(noisy)
    cond[:, :, :1] = image_cond
    mask = torch.zeros_like(noisy[:, :1])
    mask[:, :, 0] = 1.0
    return torch.cat([noisy, cond, mask], dim=1)


def sample_shifted_timestep(rng: np.random.Generator, sampling: TimestepSampling, count: int) -> np.ndarray:
    """t in (0, 1000]: u (logit-normal or uniform), t0 = floor(1000u), then the SD3 shift."""
    if sampling.weighting == "logit_normal":
        u = 1.0 / (1.0 + np.exp(-rng.normal(sampling.logit_mean, sampling.logit_std, size=count)))
    else:
        u = rng.random(count)
    t0 = np.floor(1000.0 * u)
    shift = sampling.shift
    t = shift * t0 / (1.0 + (shift - 1.0) * t0 / 1000.0)
    # t = 0 would be a clean target with nothing to learn; the scheduler's smallest step is 1
    return np.clip(t, 1.0, 1000.0)


class SampleBuilder:
    """Draws the sample of (step, micro, rank, slot) from a prepared dataset's `split` for one method."""

    def __init__(
        self,
        dataset: PreparedDataset,
        method: ARMethod | BiMethod | SelfForcingMethod,
        seed: int,
        cfg_dropout: float,
        split: str = "train",
        data: DataSection | None = None,
    ):
        from worker.training.sources import ClipSources

        self.dataset = dataset
        self.method = method
        self.seed = seed
        self.cfg_dropout = cfg_dropout
        self.data = data or DataSection(path=str(dataset.directory))
        self.sources = ClipSources(dataset, self.data, method.window_latents, seed, split)
        # the clips an indexed dataset offers (a stream cannot list its clips)
        self.clips = [clip_id for source in self.sources.sources for clip_id in getattr(source, "clips", [])]
        self.skipped = self.sources.skipped
        self.negative = dataset.negative_prompt()
        self.points = sample_points_in_sphere(method.memory_points, seed=seed) if isinstance(method, ARMethod) else None
        self._methods: dict[int, ARMethod | BiMethod | SelfForcingMethod] = {}
        self._marked_step: int | None = None

    def clip_for(self, global_index: int) -> ClipTensors:
        return self.sources.clip(global_index)

    def method_at(self, step: int):
        """The method with the curriculum's window at `step`."""
        window = self.data.curriculum_window(step, self.method.window_latents)
        if window not in self._methods:
            self._methods[window] = self.method.model_copy(update={"window_latents": window})
        return self._methods[window]

    def batch(self, step: int, micro: int, accumulation: int, rank: int, world: int, batch_size: int) -> Batch:
        if step != self._marked_step:
            self.sources.mark()
            self._marked_step = step
        method = self.method_at(step)
        samples = []
        for slot in range(batch_size):
            global_index = ((step * accumulation + micro) * world + rank) * batch_size + slot
            rng = np.random.default_rng([self.seed, _SAMPLE, global_index])
            samples.append(self.sample(self.clip_for(global_index), rng, method))
        return collate(samples)

    def state_dict(self) -> dict:
        """Where the streamed sources stand (checkpoints keep it; indexed sources need nothing)."""
        return self.sources.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        self.sources.load_state_dict(state)

    def sample(self, clip: ClipTensors, rng: np.random.Generator, method=None) -> dict:
        method = method or self.method
        window = method.window_latents
        if isinstance(method, ARMethod):
            indices, sigmas, supervised, memory = self._ar_layout(clip, rng, method)
        elif not isinstance(method, BiMethod):
            # distillation: the student rolls out the window from noise; its latents are only a reference
            indices, sigmas, supervised, memory = list(range(window)), np.ones(window), np.ones(window), False
        else:
            indices = list(range(window))
            sigmas = np.full(window, sample_shifted_timestep(rng, method.timesteps, 1)[0] / 1000.0)
            supervised, memory = np.ones(window), False
        prompt = self.negative if rng.random() < self.cfg_dropout else clip.prompt
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        latents = clip.latent[:, indices]
        return {
            "latents": latents,
            "noise": torch.randn(latents.shape, generator=generator),
            "sigmas": torch.tensor(sigmas, dtype=torch.float32),
            "loss_mask": torch.tensor(supervised, dtype=torch.float32),
            "image_cond": clip.image_cond,
            "viewmats": clip.viewmats[indices],
            "intrinsics": clip.intrinsics_norm[indices],
            "actions": clip.labels[indices],
            "prompt": prompt,
            "vision": clip.vision,
            "memory": memory,
        }

    def _ar_layout(self, clip: ClipTensors, rng: np.random.Generator, method: ARMethod):
        chunk, window = method.chunk_latents, method.window_latents
        chunks = window // chunk
        total = clip.num_latents
        memory = rng.random() < method.memory_probability and total >= window + chunk
        indices = list(range(window))
        if memory:
            current = chunk * int(rng.integers(window // chunk, (total - chunk) // chunk + 1))
            w2c = clip.viewmats.double()
            history = select_memory_frames(w2c, current, self.points, method.memory_latents, method.context_latents)
            candidate = history + list(range(current, current + chunk))
            if len(candidate) == window:
                indices = candidate
            else:
                memory = False
        # one noise level per chunk; history chunks of memory samples get the official low-noise range
        per_chunk = sample_shifted_timestep(rng, method.timesteps, chunks)
        if memory:
            low, high = method.history_timesteps
            per_chunk[:-1] = rng.integers(low, high + 1, size=chunks - 1)
        sigmas = np.repeat(per_chunk / 1000.0, chunk)
        supervised = np.zeros(window)
        supervised[-chunk if memory else 0 :] = 1.0
        return indices, sigmas, supervised, memory


def pad_tokens(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, D] token lists into [B, max(L, 1), D] with a validity mask."""
    longest = max(1, max(state.shape[0] for state in states))
    padded = torch.stack([F.pad(state, (0, 0, 0, longest - state.shape[0])) for state in states])
    mask = torch.stack([torch.arange(longest) < state.shape[0] for state in states]).long()
    return padded, mask


def collate(samples: list[dict]) -> Batch:
    llm, llm_mask = pad_tokens([sample["prompt"].llm for sample in samples])
    byt5, byt5_mask = pad_tokens([sample["prompt"].byt5 for sample in samples])
    stacked = {
        name: torch.stack([sample[name] for sample in samples])
        for name in (
            "latents",
            "noise",
            "sigmas",
            "loss_mask",
            "image_cond",
            "viewmats",
            "intrinsics",
            "actions",
            "vision",
        )
    }
    vision = stacked.pop("vision")
    return Batch(
        prompt=PromptEmbeddings(llm, llm_mask, byt5, byt5_mask, vision),
        memory=torch.tensor([sample["memory"] for sample in samples]),
        **stacked,
    )


def prompt_embeddings(states: PromptStates, vision: torch.Tensor) -> PromptEmbeddings:
    """One prompt's cached states as a batch of one."""
    llm, llm_mask = pad_tokens([states.llm])
    byt5, byt5_mask = pad_tokens([states.byt5])
    return PromptEmbeddings(llm, llm_mask, byt5, byt5_mask, vision[None])
