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
    chunks: list[tuple[int, torch.Tensor]] = []
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
        on_chunk=lambda index, chunk: chunks.append((index, chunk)),
    )
    torch.testing.assert_close(latents, io[f"rollout_{mode}"], atol=ATOL, rtol=ATOL)
    assert [index for index, _ in chunks] == list(range(NUM_LATENTS // CHUNK_LATENTS))
    for index, chunk in chunks:
        assert torch.equal(chunk, latents[:, :, CHUNK_LATENTS * index : CHUNK_LATENTS * (index + 1)])
    if first_latent is not None:
        assert torch.equal(latents[:, :, :1], first_latent)
    # the chunks that used the memory rule saw the official context (chunk starts 16, 20, 24)
    points = sample_points_in_sphere()
    ours = [select_wan_context_latents(io["viewmats"], start, points) for start in (16, 20, 24)]
    assert ours == facts["rollout_memory"][mode]


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
