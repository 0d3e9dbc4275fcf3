"""Library behaviour: conventions of the interchange formats, lengths and fixes, presets, names, resolve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from trajectories import (
    CHUNK,
    DEFAULT_K,
    PRESETS,
    Trajectory,
    TrajectoryError,
    action_name,
    frames_to_latents,
    latents_to_frames,
    parse_pose_string,
    resolve,
    save_trajectory,
    valid_latents,
)
from trajectories.actions import action_keys, compute_actions
from trajectories.formats import dumps, from_matrices, from_nerfstudio, load, to_nerfstudio
from trajectories.geometry import rot_y


def test_latent_frame_arithmetic():
    assert [latents_to_frames(n) for n in (1, 4, 32)] == [1, 13, 125]
    assert frames_to_latents(125) == 32 and frames_to_latents(1) == 1
    with pytest.raises(TrajectoryError) as error:
        frames_to_latents(127)
    assert error.value.hint == "use 125 or 129 frames"
    assert CHUNK == {"ar": 4, "ar-rl": 4, "ar-distilled": 4, "bi": 16, "wan-ar": 4, "wan-distilled": 4}
    assert valid_latents("ar", 32) and valid_latents("ar-distilled", 4) and not valid_latents("ar", 5)
    assert valid_latents("bi", 32) and not valid_latents("bi", 12) and not valid_latents("ar", 0)
    with pytest.raises(TrajectoryError, match="unknown model"):
        valid_latents("gpt", 4)


def test_fixed_pads_with_a_hold_or_trims():
    trajectory = parse_pose_string("w-3, right-2")  # 6 latents
    padded = trajectory.fixed("ar", "pad")
    assert padded.num_latents == 8 and padded.validate("ar").ok
    np.testing.assert_array_equal(padded.c2w[6:], np.repeat(trajectory.c2w[-1:], 2, axis=0))
    assert padded.actions.tolist() == [0, 9, 9, 9, 1, 1, 0, 0]
    trimmed = trajectory.fixed("ar", "trim")
    assert trimmed.num_latents == 4 and trimmed.actions.tolist() == [0, 9, 9, 9]
    assert trajectory.fixed("bi", "pad").num_latents == 16
    with pytest.raises(TrajectoryError, match="cannot trim 6 latents"):
        trajectory.fixed("bi", "trim")
    valid = parse_pose_string("w-31")
    assert valid.fixed("ar") == valid


def test_validate_with_frames():
    report = parse_pose_string("w-11").validate("ar", frames=45)
    assert report.ok and report.num_frames == 45
    report = parse_pose_string("w-11").validate("ar", frames=46)
    assert not report.ok and "46 frames is not 4k+1" in report.problems[0]
    assert report.to_dict()["ok"] is False


def test_action_names():
    assert action_name(0) == "—"
    assert action_name(9) == "W" and action_name(1) == "→" and action_name(10) == "W+→"
    assert action_name(8 * 9 + 3) == "S+A+↑" and action_name(5 * 9 + 8) == "W+D+←+↓"
    assert action_keys(8 * 9 + 5) == (frozenset("SA"), frozenset("→↑"))
    with pytest.raises(TrajectoryError):
        action_name(81)


def test_trajectory_is_immutable():
    trajectory = parse_pose_string("w-3")
    with pytest.raises(AttributeError):
        trajectory.c2w = np.eye(4)[None]
    with pytest.raises(ValueError):
        trajectory.c2w[0, 0, 3] = 1.0
    with pytest.raises(ValueError):
        trajectory.actions[0] = 3


def test_default_intrinsics_and_custom_K():
    trajectory = parse_pose_string("w-3")
    np.testing.assert_array_equal(trajectory.K, np.repeat(DEFAULT_K[None], 4, axis=0))
    custom = Trajectory(trajectory.c2w, [[400.0, 0, 416], [0, 400.0, 240], [0, 0, 1]])
    np.testing.assert_allclose(custom.normalized_K()[0], [[400 / 832, 0, 0.5], [0, 400 / 480, 0.5], [0, 0, 1]])


def test_quarter_turn_yaw_is_labelled_right():
    """A 90-degree relative yaw is scipy's gimbal-lock case; the label must still be "turn right"."""
    c2w = np.repeat(np.eye(4)[None], 2, axis=0)
    c2w[1, :3, :3] = rot_y(math.pi / 2)
    assert compute_actions(c2w).tolist() == [0, 1]


def test_presets_are_valid_for_ar_and_have_their_names():
    for name in (
        "forward",
        "backward",
        "strafe",
        "orbit-left",
        "orbit-right",
        "pan",
        "look-around",
        "walk-and-turn",
        "figure-eight",
    ):
        assert name in PRESETS
    for preset in PRESETS.values():
        trajectory = resolve(preset.name)
        assert trajectory.validate("ar").ok, preset.name
        assert trajectory.source == preset.name


def test_orbit_keeps_the_point_ahead_centred():
    trajectory = resolve("orbit-left")
    target = np.array([0.0, 0.0, 2.0, 1.0])
    in_camera = trajectory.viewmats() @ target
    np.testing.assert_allclose(in_camera[:, :3], np.broadcast_to([0, 0, 2.0], (32, 3)), atol=1e-5)
    assert set(trajectory.actions[1:].tolist()) == {4 * 9 + 1}  # A + turn right


def test_figure_eight_closes_its_loops():
    trajectory = resolve("figure-eight")
    np.testing.assert_allclose(trajectory.c2w[33], trajectory.c2w[3], atol=1e-9)
    np.testing.assert_allclose(trajectory.c2w[63], trajectory.c2w[3], atol=1e-9)


def test_resolve_accepts_presets_files_and_pose_strings(tmp_path):
    path = tmp_path / "t.json"
    save_trajectory(parse_pose_string("w-7"), path)
    assert resolve(str(path)) == parse_pose_string("w-7")
    assert resolve(path) == parse_pose_string("w-7")
    assert resolve("forward") == parse_pose_string("w-31")
    assert resolve(" w-7 ").source == "w-7"
    with pytest.raises(TrajectoryError, match="file not found"):
        resolve(tmp_path / "missing.json")


def test_nerfstudio_conventions():
    """An OpenGL camera looking down -z that walks along -z is an OpenCV camera walking forward."""
    cameras = []
    for step in range(4):
        c2w = np.eye(4)
        c2w[2, 3] = -0.1 * step
        cameras.append({"camera_to_world": c2w.reshape(-1).tolist(), "fov": 60.0, "aspect": 16 / 9})
    trajectory = from_nerfstudio({"render_height": 720, "render_width": 1280, "camera_path": cameras})
    np.testing.assert_allclose(trajectory.c2w[0], np.diag([1.0, -1.0, -1.0, 1.0]))
    assert trajectory.actions.tolist() == [0, 9, 9, 9]
    focal = 360 / math.tan(math.radians(30))
    np.testing.assert_allclose(trajectory.K[0], [[focal, 0, 640], [0, focal, 360], [0, 0, 1]])
    exported = to_nerfstudio(trajectory)
    assert exported["render_width"] == 1280 and exported["render_height"] == 720
    np.testing.assert_allclose(exported["camera_path"][1]["camera_to_world"], cameras[1]["camera_to_world"], atol=1e-12)
    assert math.isclose(exported["camera_path"][0]["fov"], 60.0)


def test_matrices_conventions(tmp_path):
    trajectory = parse_pose_string("w-2, right-2, up-1")
    w2c_opengl = json.loads(dumps(trajectory, "matrices:opengl:w2c"))
    expected = np.linalg.inv(trajectory.c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))
    np.testing.assert_allclose(w2c_opengl, expected, atol=1e-12)
    np.testing.assert_allclose(from_matrices(w2c_opengl, "opengl", "w2c").c2w, trajectory.c2w, atol=1e-12)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(trajectory.c2w.tolist()))
    assert load(path).actions.tolist() == trajectory.actions.tolist()  # a bare list defaults to opencv c2w


def test_plain_csv_columns_and_signs(tmp_path):
    path = tmp_path / "t.csv"
    save_trajectory(parse_pose_string("right-30, up-5, d-1"), path)
    header, *rows = Path(path).read_text().splitlines()
    assert header == "latent,x,y,z,yaw,pitch,roll,fx,fy,cx,cy"
    last = dict(zip(header.split(","), rows[-1].split(",")))
    assert math.isclose(float(last["yaw"]), 90.0) and math.isclose(float(last["pitch"]), 15.0)
    # After turning right by 90 deg the camera faces world +x, so its right (d) is world -z.
    assert math.isclose(float(last["z"]), -0.08, abs_tol=1e-12)
    csv_only = tmp_path / "min.csv"
    csv_only.write_text("latent,x,y,z,yaw,pitch\n1,0,0,0.08,0,0\n0,0,0,0,0,0\n")
    assert load(csv_only).actions.tolist() == [0, 9]
