"""Property tests: lossless JSON, pose strings give their segment's action, poses stay rigid."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trajectories import Trajectory, parse_pose_string
from trajectories.formats import dumps, load
from trajectories.geometry import (
    euler_xyz_extrinsic,
    rigid_inverse,
    rigidity_error,
    rot_x,
    rot_y,
    rot_z,
    rotation_from_ypr,
    ypr_from_rotation,
)
from trajectories.official import parse_json_text

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)

angle = st.floats(-math.pi, math.pi, allow_nan=False)
coordinate = st.floats(-50, 50, allow_nan=False)


@st.composite
def rigid_trajectories(draw) -> Trajectory:
    count = draw(st.integers(1, 12))
    c2w = np.repeat(np.eye(4)[None], count, axis=0)
    for i in range(count):
        c2w[i, :3, :3] = rotation_from_ypr(draw(angle), draw(st.floats(-1.5, 1.5)), draw(angle))
        c2w[i, :3, 3] = [draw(coordinate) for _ in range(3)]
    focal = draw(st.floats(10, 5000))
    K = [[focal, 0.0, draw(st.floats(1, 4000))], [0.0, draw(st.floats(10, 5000)), draw(st.floats(1, 4000))], [0, 0, 1]]
    return Trajectory(c2w, K)


@PROPERTY_SETTINGS
@given(rigid_trajectories())
def test_official_json_round_trip_is_lossless(trajectory):
    text = json.dumps(trajectory.to_official_json())
    again = Trajectory.from_official_json(parse_json_text(text))
    assert again == trajectory
    np.testing.assert_array_equal(again.viewmats(), trajectory.viewmats())


@PROPERTY_SETTINGS
@given(rigid_trajectories(), st.randoms(use_true_random=False))
def test_official_json_key_order_does_not_matter(trajectory, random):
    entries = list(trajectory.to_official_json().items())
    random.shuffle(entries)
    assert Trajectory.from_official_json(dict(entries)) == trajectory


# One segment: at most one of each opposing pair, custom steps where the action cones stay unambiguous.
TRANSLATIONS = [(), ("w",), ("s",), ("d",), ("a",), ("w", "d"), ("w", "a"), ("s", "d"), ("s", "a")]
ROTATIONS = [
    (),
    ("right",),
    ("left",),
    ("up",),
    ("down",),
    ("right", "up"),
    ("right", "down"),
    ("left", "up"),
    ("left", "down"),
]


@st.composite
def segments(draw):
    translation_id = draw(st.integers(0, 8))
    rotation_id = draw(st.integers(0, 8))
    translation, rotation = TRANSLATIONS[translation_id], ROTATIONS[rotation_id]
    latents = draw(st.integers(1, 4))
    if not translation and not rotation:
        return "hold", latents, 0
    # Diagonal moves need equal steps to stay inside both 60-degree cones; turns stay small so a
    # turn made before the move (the official order) does not push the move out of its cone.
    move_step = draw(st.sampled_from([None, 0.01, 0.05, 0.2, 1.5]))
    moves = [name if move_step is None else f"{name}:{move_step}" for name in translation]
    moves += [
        name if step is None else f"{name}:{step}"
        for name, step in ((name, draw(st.sampled_from([None, 0.1, 1.0, 8.0]))) for name in rotation)
    ]
    order = draw(st.permutations(moves))
    return "+".join(order), latents, translation_id * 9 + rotation_id


@PROPERTY_SETTINGS
@given(st.lists(segments(), min_size=1, max_size=6))
def test_pose_string_actions_match_every_segment(parts):
    text = ", ".join(f"{moves}-{latents}" for moves, latents, _ in parts)
    trajectory = parse_pose_string(text)
    expected = [0] + [action for _, latents, action in parts for _ in range(latents)]
    assert trajectory.actions.tolist() == expected
    assert trajectory.num_latents == 1 + sum(latents for _, latents, _ in parts)


@PROPERTY_SETTINGS
@given(st.lists(segments(), min_size=1, max_size=10))
def test_composed_poses_stay_rigid_and_invert(parts):
    trajectory = parse_pose_string(", ".join(f"{moves}-{latents}" for moves, latents, _ in parts))
    assert rigidity_error(trajectory.c2w).max() < 1e-9
    identity = np.broadcast_to(np.eye(4), trajectory.c2w.shape)
    np.testing.assert_allclose(trajectory.viewmats() @ trajectory.c2w, identity, atol=1e-9)
    np.testing.assert_allclose(rigid_inverse(trajectory.c2w), trajectory.viewmats(), atol=1e-9)
    rebased = trajectory.rebased()
    assert rigidity_error(rebased.c2w).max() < 1e-9
    np.testing.assert_allclose(rebased.c2w, trajectory.c2w, atol=1e-9)  # pose strings start at identity
    np.testing.assert_array_equal(rebased.actions, trajectory.actions)


@PROPERTY_SETTINGS
@given(angle, st.floats(-1.5, 1.5), angle)
def test_euler_xyz_extrinsic_inverts_rz_ry_rx(alpha, beta, gamma):
    rotation = rot_z(gamma) @ rot_y(beta) @ rot_x(alpha)
    recovered = euler_xyz_extrinsic(rotation)
    np.testing.assert_allclose(rot_z(recovered[2]) @ rot_y(recovered[1]) @ rot_x(recovered[0]), rotation, atol=1e-12)
    np.testing.assert_allclose(recovered[1], beta, atol=1e-9)


@PROPERTY_SETTINGS
@given(angle, st.floats(-1.5, 1.5), angle)
def test_yaw_pitch_roll_round_trip(yaw, pitch, roll):
    rotation = rotation_from_ypr(yaw, pitch, roll)
    np.testing.assert_allclose(rotation_from_ypr(*ypr_from_rotation(rotation)), rotation, atol=1e-12)


@PROPERTY_SETTINGS
@given(
    rigid_trajectories(),
    st.sampled_from(["csv", "json", "nerfstudio", "matrices", "matrices:opengl:w2c", "matrices:opencv:w2c"]),
)
def test_interchange_round_trips(tmp_path_factory, trajectory, fmt):
    path = tmp_path_factory.mktemp("rt") / ("t.csv" if fmt == "csv" else "t.json")
    path.write_text(dumps(trajectory, fmt))
    again = load(path, fmt)
    np.testing.assert_allclose(again.c2w, trajectory.c2w, atol=1e-9)
    if fmt in ("csv", "json"):
        np.testing.assert_array_equal(again.K, trajectory.K)
