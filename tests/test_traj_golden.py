"""Parity with the official pose pipeline: golden tensors and the fact sheet's worked examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from trajectories import Trajectory, frames_to_latents, parse_pose_string, resolve

GOLDEN = Path(__file__).parent / "golden"
CASES = json.loads((GOLDEN / "pose_sched_memory.json").read_text())
TENSORS = load_file(str(GOLDEN / "pose_sched_memory.safetensors"))
NAMES = ["w31", "mix12", "all8", "turn32"]


@pytest.mark.parametrize("name", NAMES)
def test_golden_viewmats_K_actions(name):
    trajectory = parse_pose_string(CASES[name]["pose"])
    assert trajectory.num_latents == CASES[name]["latents"]
    np.testing.assert_allclose(trajectory.viewmats(), TENSORS[f"{name}.w2c"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(trajectory.normalized_K(), TENSORS[f"{name}.K"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(trajectory.actions, TENSORS[f"{name}.action"])
    assert trajectory.actions.dtype == np.int64
    assert trajectory.viewmats().dtype == np.float64 and trajectory.normalized_K().dtype == np.float64


@pytest.mark.parametrize("name", NAMES)
def test_golden_actions_recomputed_from_official_json(name):
    """Actions of an imported file (only c2w and K survive) equal the official labels."""
    trajectory = Trajectory.from_official_json(parse_pose_string(CASES[name]["pose"]).to_official_json())
    np.testing.assert_array_equal(trajectory.actions, TENSORS[f"{name}.action"])


def test_worked_example_w3_right1():
    trajectory = resolve("w-3, right-1")
    assert (trajectory.num_latents, trajectory.num_frames) == (5, 17)
    assert not trajectory.validate("ar").ok
    for latent, z in enumerate([0.0, 0.08, 0.16, 0.24]):
        np.testing.assert_allclose(trajectory.c2w[latent][:3, :3], np.eye(3), atol=1e-12)
        np.testing.assert_allclose(trajectory.c2w[latent][:3, 3], [0, 0, z], atol=1e-12)
    c2w4 = [[0.99863, 0, 0.052336, 0], [0, 1, 0, 0], [-0.052336, 0, 0.99863, 0.24], [0, 0, 0, 1]]
    np.testing.assert_allclose(trajectory.c2w[4], c2w4, atol=1e-6)
    w2c = trajectory.viewmats()
    for latent in (1, 2, 3):
        np.testing.assert_allclose(w2c[latent][:3, 3], [0, 0, -0.08 * latent], atol=1e-12)
    w2c4 = [[0.99863, 0, -0.052336, 0.012561], [0, 1, 0, 0], [0.052336, 0, 0.99863, -0.239671], [0, 0, 0, 1]]
    np.testing.assert_allclose(w2c[4], w2c4, atol=1e-6)
    K = [[0.505051, 0, 0.5], [0, 0.897868, 0.5], [0, 0, 1]]
    np.testing.assert_allclose(trajectory.normalized_K(), np.broadcast_to(K, (5, 3, 3)), atol=1e-6)
    assert trajectory.actions.tolist() == [0, 9, 9, 9, 1]
    # PRoPE's projection of latent 4: lift(diag(fx, fy, 1)) @ w2c.
    K4 = trajectory.normalized_K()[4]
    projection = np.diag([K4[0, 0], K4[1, 1], 1.0, 1.0]) @ w2c[4]
    expected = [
        [0.504358, 0, -0.026432, 0.006344],
        [0, 0.897868, 0, 0],
        [0.052336, 0, 0.99863, -0.239671],
        [0, 0, 0, 1],
    ]
    np.testing.assert_allclose(projection, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("pose", "actions"),
    [
        ("w-3, right-4, d-4", [0, 9, 9, 9, 1, 1, 1, 1, 27, 27, 27, 27]),
        ("s-1, a-1, d-1, left-1, up-1, down-1, right-1", [0, 18, 36, 27, 2, 3, 4, 1]),
        ("w-1, s-1, d-1, a-1, right-1, left-1, up-1, down-1", [0, 9, 18, 27, 36, 1, 2, 3, 4]),
    ],
)
def test_worked_action_sequences(pose, actions):
    assert parse_pose_string(pose).actions.tolist() == actions


def test_w31_is_the_125_frame_default():
    trajectory = parse_pose_string("w-31")
    assert (trajectory.num_latents, trajectory.num_frames) == (32, 125)
    assert frames_to_latents(125) == 32
    assert trajectory.validate("ar", frames=125).ok
    assert trajectory.validate("bi").ok


def test_official_whitespace_and_trailing_commas_and_integral_floats():
    reference = parse_pose_string("w-3, right-4")
    for text in (" w - 3 ,right-4,", "w-3.0, right-4", "w-3,,right-4"):
        np.testing.assert_array_equal(parse_pose_string(text).c2w, reference.c2w)
