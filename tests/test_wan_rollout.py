"""The WAN-5B autoregressive rollout: schedule, memory selection and whole rollouts against the official
pipeline (golden tensors of tools/make_wan_golden.py), and the inputs it refuses."""

from __future__ import annotations

import json

import pytest
import torch

from golden_util import GOLDEN_DIR, load_io
from transformer_util import load_wan_golden_model
from worker.models.scheduler import FlowMatchScheduler
from worker.pipeline.memory import sample_points_in_sphere, select_wan_context_latents
from worker.pipeline.wan_rollout import CHUNK_LATENTS, DISTILLED_TIMESTEPS, wan_ar_rollout

ATOL = 1e-5
NUM_LATENTS = 28
GRID = (4, 6)


@pytest.fixture(scope="module")
def io():
    return load_io("wan_tiny_io.safetensors")


@pytest.fixture(scope="module")
def facts():
    return json.loads((GOLDEN_DIR / "wan_schedule_memory.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_wan_golden_model()


def test_distilled_schedule_is_the_official_one(facts):
    ours = torch.tensor(DISTILLED_TIMESTEPS, dtype=torch.float32)
    assert ours.tolist() == facts["timesteps"]
    # they are shift 8 on σ = 1, .75, .5, .25, rounded to four decimals
    shifted = FlowMatchScheduler(4, shift=8.0).timesteps
    torch.testing.assert_close(ours[:-1], shifted, atol=1e-4, rtol=0)


def test_memory_selection_matches_official_on_a_loop(facts):
    w2c = torch.tensor(facts["loop_w2c"])
    points = sample_points_in_sphere()
    for start, official in facts["loop_memory"].items():
        assert select_wan_context_latents(w2c, int(start), points) == official, start
    # before 16 latents exist every earlier latent is context
    assert select_wan_context_latents(w2c, 12, points) == list(range(12))
    assert select_wan_context_latents(w2c, 0, points) == []


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
@torch.no_grad()
def test_rollout_matches_official(model, io, facts, mode):
    first_latent = io["first_latent"] if mode == "i2v" else None
    seed = facts["noise_seeds"][mode]
    chunks, steps = [], []
    latents = wan_ar_rollout(
        model,
        text_states=io["text"],
        num_latents=NUM_LATENTS,
        height_latents=GRID[0],
        width_latents=GRID[1],
        viewmats=io["viewmats"],
        intrinsics=io["intrinsics"],
        action_ids=io["actions"],
        first_latent=first_latent,
        generator=torch.Generator().manual_seed(seed),
        on_chunk=chunks.append,
        on_step=lambda event: steps.append((event.chunk, event.num_chunks, event.step, event.steps, len(chunks))),
    )
    torch.testing.assert_close(latents, io[f"rollout_{mode}"], atol=ATOL, rtol=ATOL)
    num_chunks = NUM_LATENTS // CHUNK_LATENTS
    assert [chunk.index for chunk in chunks] == list(range(num_chunks))
    for chunk in chunks:
        assert (chunk.start, chunk.end) == (CHUNK_LATENTS * chunk.index, CHUNK_LATENTS * (chunk.index + 1))
        assert torch.equal(chunk.latents, latents[:, :, chunk.start : chunk.end])
        assert len(chunk.step_times) == 4 and chunk.context_s >= 0 and chunk.denoise_s >= sum(chunk.step_times)
    # every step is reported as it ends, before its chunk is
    assert steps == [(index, num_chunks, step, 4, index) for index in range(num_chunks) for step in range(1, 5)]
    if first_latent is not None:
        assert torch.equal(latents[:, :, :1], first_latent)
    # every earlier latent until 16 exist, then the official memory rule's context (chunk starts 16, 20, 24)
    assert [chunk.context for chunk in chunks[:5]] == [list(range(chunk.start)) for chunk in chunks[:5]]
    assert [chunk.context for chunk in chunks[4:]] == facts["rollout_memory"][mode]


def test_rollout_refuses_what_the_model_cannot_run(model, io):
    def rollout(**changes):
        args = dict(
            text_states=io["text"],
            num_latents=8,
            height_latents=GRID[0],
            width_latents=GRID[1],
            viewmats=io["viewmats"][:8],
            intrinsics=io["intrinsics"][:8],
            action_ids=io["actions"][:8],
            first_latent=None,
            generator=torch.Generator().manual_seed(0),
        )
        return wan_ar_rollout(model, **{**args, **changes})

    with pytest.raises(ValueError, match="multiple of the 4-latent chunk"):
        rollout(num_latents=6, viewmats=io["viewmats"][:6])
    with pytest.raises(ValueError, match="multiples of 32"):
        rollout(height_latents=5)
    with pytest.raises(ValueError, match="viewmats must be"):
        rollout(viewmats=io["viewmats"][:4])
    with pytest.raises(ValueError, match="first_latent must be"):
        rollout(first_latent=torch.zeros(1, 8, 1, 2, 2))
    with pytest.raises(ValueError, match=r"text_states must be \[1, L, 16\]"):
        rollout(text_states=torch.zeros(1, 512, 4096))
    with pytest.raises(ValueError, match="final 0"):
        rollout(steps=[1000.0, 500.0])
    with pytest.raises(ValueError, match="decrease strictly"):
        rollout(steps=[500.0, 800.0, 0.0])
