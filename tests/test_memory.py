"""Reconstituted context memory against the official selections (seeded point cloud)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from golden_util import GOLDEN_DIR, load_io
from worker.pipeline.memory import fov_overlaps, sample_points_in_sphere, select_context_latents


@pytest.fixture(scope="module")
def golden():
    return load_io("pose_sched_memory.safetensors")


@pytest.fixture(scope="module")
def expected():
    return json.loads((GOLDEN_DIR / "pose_sched_memory.json").read_text())["memory_selection_seed0"]


def test_seeded_point_cloud_is_the_golden_one(golden):
    # Same draws as the official cloud; the trigonometry may differ in the last bit with the thread count
    # and SIMD width (seen with OMP_NUM_THREADS=1), so compare to float32 precision, not bit for bit.
    torch.testing.assert_close(sample_points_in_sphere(seed=0), golden["points_local_seed0"], rtol=0, atol=1e-5)
    assert not torch.equal(sample_points_in_sphere(seed=1), golden["points_local_seed0"])


@pytest.mark.parametrize("trajectory", ["w31", "turn32"])
def test_selection_matches_official(golden, expected, trajectory):
    w2c = golden[f"{trajectory}.w2c"]
    points = golden["points_local_seed0"]
    for start, indices in expected[trajectory].items():
        assert select_context_latents(w2c, int(start), 4, points=points) == indices, start
    # the default cloud is the seed-0 cloud; numpy input works the same
    assert select_context_latents(w2c.numpy(), 28) == expected[trajectory]["28"]


def test_fact_sheet_examples(golden):
    # §5.5: for w-31 chunk 6 picks candidate 8, for w-7,right-8,left-8,s-8 candidate 4
    assert select_context_latents(golden["w31.w2c"], 24) == [0, 1, 2, 3, *range(8, 24)]
    assert select_context_latents(golden["turn32.w2c"], 24) == [*range(0, 8), *range(12, 24)]
    assert select_context_latents(golden["w31.w2c"], 0) == []


def test_bidirectional_chunks_take_the_union_over_their_starts(golden):
    w2c = golden["turn32.w2c"]
    union = set()
    for start in (16, 20, 24, 28):
        union.update(select_context_latents(w2c, start, 4))
    expected = sorted(index for index in union if not 16 <= index < 32)
    assert select_context_latents(w2c, 16, 16) == expected == list(range(16))


def test_selection_is_bounded_on_a_long_trajectory():
    """A camera that walks away and comes back: the memory clip is the one seen from the same place."""
    frames = 64
    w2c = np.tile(np.eye(4), (frames, 1, 1))
    # forward 0.3 per latent for 32 latents, then back to the start
    positions = np.concatenate([np.arange(32) * 0.3, (31 - np.arange(32)) * 0.3])
    w2c[:, 2, 3] = -positions
    for start in (24, 40):
        selected = select_context_latents(w2c, start, 4)
        assert len(selected) <= 20 and selected[:4] == [0, 1, 2, 3]
        assert selected[-12:] == list(range(start - 12, start))
    # returning near the start: the chosen clip is the earliest candidate
    assert select_context_latents(w2c, 56, 4)[4:8] == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="beyond"):
        select_context_latents(w2c, 64, 4)


def test_overlap_of_a_camera_with_itself_and_with_one_facing_away():
    points = sample_points_in_sphere(2000, seed=3).double()
    identity = torch.eye(4, dtype=torch.float64)
    assert fov_overlaps(identity, identity[None], points) == [1.0]
    turned = identity.clone()
    turned[:3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    assert fov_overlaps(identity, torch.stack([turned, identity]), points) == [0.0, 1.0]


def _brute_force_overlaps(w2c_query, w2c_history, points):
    """The official test, camera by camera over the whole cloud: the oracle for the pruned, batched one."""
    from worker.pipeline.memory import MAX_DISTANCE, camera_center_and_angles, inside_fov

    query_center, query_pitch, query_yaw = camera_center_and_angles(
        torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_query))
    )
    world_points = points + query_center
    in_query = inside_fov(world_points, query_center, query_pitch, query_yaw)
    seen = int(in_query.sum())
    shares = []
    for pose in torch.linalg.inv(w2c_query @ torch.linalg.inv(w2c_history)):
        center, pitch, yaw = camera_center_and_angles(pose)
        in_history = inside_fov(world_points, center, pitch, yaw)
        in_history &= torch.linalg.norm(world_points - center, dim=1) < MAX_DISTANCE
        shares.append(float(np.float32(int((in_query & in_history).sum())) / np.float32(seen)) if seen else 0.0)
    return shares


def test_pruned_overlaps_equal_the_whole_cloud_test_near_and_far():
    generator = np.random.default_rng(5)
    points = sample_points_in_sphere(5000, seed=2).double()
    # cameras scattered from on top of the query camera to far beyond any overlap, in every direction
    c2w = np.tile(np.eye(4), (80, 1, 1))
    for index in range(80):
        yaw, pitch = generator.uniform(-np.pi, np.pi), generator.uniform(-0.6, 0.6)
        rotation_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        rotation_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        c2w[index, :3, :3] = rotation_y @ rotation_x
        c2w[index, :3, 3] = generator.normal(size=3) * generator.choice([0.5, 4.0, 12.0, 40.0])
    w2c = torch.from_numpy(np.linalg.inv(c2w))
    query = torch.eye(4, dtype=torch.float64)
    shares = fov_overlaps(query, w2c, points)
    assert shares == _brute_force_overlaps(query, w2c, points)
    assert 0 < sum(share > 0 for share in shares) < len(shares)  # some overlap, some pruned or facing away


def test_selection_on_a_wandering_walk_equals_the_whole_cloud_selection(monkeypatch):
    """A 160-latent walk forward with turns: every chunk picks what the unpruned test picks."""
    import worker.pipeline.memory as memory
    from trajectories.poses import motions_to_c2w

    motions = [
        {"forward": 0.3, **({"yaw": 0.4 if latent % 20 < 10 else -0.5} if latent % 5 == 4 else {})}
        for latent in range(159)
    ]
    w2c = np.linalg.inv(motions_to_c2w(motions))
    points = sample_points_in_sphere(4000, seed=1)
    pruned = [select_context_latents(w2c, start, 4, points=points) for start in range(24, 160, 8)]
    monkeypatch.setattr(memory, "fov_overlaps", _brute_force_overlaps)
    assert pruned == [select_context_latents(w2c, start, 4, points=points) for start in range(24, 160, 8)]
