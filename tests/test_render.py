"""Preview rendering: re-projection geometry, frame/pose interpolation, HUD, example assets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from trajectories import Trajectory, resolve
from trajectories.geometry import rot_x, rot_y
from trajectories.hud import Hud, active_keys, draw_hud
from trajectories.render import (
    DEFAULT_K_NORM,
    SceneDepth,
    fit_image,
    frame_actions,
    frame_intrinsics,
    frame_poses,
    intrinsics_from_fov,
    normalize_intrinsics,
    preview_frames,
    render_view,
)
from worldplay_cli.assets import EXAMPLE_IMAGE, EXAMPLE_IMAGES

WIDTH, HEIGHT = 160, 96


def pose(rotation=np.eye(3), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def dot_image(x: float, y: float, width: int = WIDTH, height: int = HEIGHT, radius: float = 2.5) -> np.ndarray:
    """Grey image with one white dot centred at pixel coordinates (x, y) (pixel centres at +0.5)."""
    column, row = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    image = np.full((height, width, 3), 40, np.uint8)
    image[(column - x) ** 2 + (row - y) ** 2 <= radius**2] = 255
    return image


def centroid(image: np.ndarray) -> tuple[float, float]:
    weight = np.clip(image[:, :, 0].astype(float) - 128.0, 0.0, None)
    row, column = np.nonzero(weight)
    weights = weight[row, column]
    return float(np.average(column + 0.5, weights=weights)), float(np.average(row + 0.5, weights=weights))


def example() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))


def test_identity_pose_reproduces_the_image():
    image = fit_image(example(), WIDTH, HEIGHT)
    assert np.array_equal(render_view(image, np.eye(4)), image)


def test_identity_trajectory_previews_the_fitted_image_on_every_frame():
    trajectory = Trajectory(np.tile(np.eye(4), (3, 1, 1)))
    frames = list(preview_frames(example(), trajectory, WIDTH, HEIGHT, hud=False))
    assert len(frames) == 9
    expected = fit_image(example(), WIDTH, HEIGHT)
    for frame in frames:
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(int) - expected).max() <= 1


def test_rotation_is_the_exact_camera_homography():
    """A pure rotation moves every pixel by K·Rᵀ·K⁻¹, independent of the depth assumption."""
    K = np.diag([WIDTH, HEIGHT, 1.0]) @ DEFAULT_K_NORM
    source = np.array([100.0, 30.0, 1.0])
    rotation = rot_y(math.radians(8)) @ rot_x(math.radians(5))
    expected = K @ rotation.T @ np.linalg.inv(K) @ source
    expected = expected[:2] / expected[2]
    rendered = render_view(dot_image(*source[:2]), pose(rotation))
    assert np.allclose(centroid(rendered), expected, atol=0.5)


def test_yaw_right_shifts_content_left_and_yaw_left_right():
    image = dot_image(WIDTH / 2, HEIGHT / 2)
    right = centroid(render_view(image, pose(rot_y(math.radians(10)))))
    left = centroid(render_view(image, pose(rot_y(math.radians(-10)))))
    assert right[0] < WIDTH / 2 - 5 < WIDTH / 2 + 5 < left[0]
    assert abs(right[1] - HEIGHT / 2) < 1 and abs(left[1] - HEIGHT / 2) < 1


def test_pitch_up_shifts_content_down():
    image = dot_image(WIDTH / 2, HEIGHT / 2)
    up = centroid(render_view(image, pose(rot_x(math.radians(6)))))
    assert up[1] > HEIGHT / 2 + 5


def test_forward_zooms_the_backdrop_by_its_depth_ratio():
    scene = SceneDepth(camera_height=1.0, far_depth=4.0)
    offset = np.array([30.0, -20.0])  # above the horizon: on the backdrop plane
    image = dot_image(WIDTH / 2 + offset[0], HEIGHT / 2 + offset[1])
    moved = np.array(centroid(render_view(image, pose(translation=(0, 0, 1.0)), scene=scene)))
    zoom = (moved - [WIDTH / 2, HEIGHT / 2]) / offset
    assert np.allclose(zoom, 4.0 / 3.0, atol=0.03)


def test_forward_moves_the_ground_by_its_own_depth():
    """A ground point 3 units ahead is 2 units ahead after a 1-unit step: it drops by 3/2 its row offset."""
    scene = SceneDepth(camera_height=1.0, far_depth=4.0)
    focal_y = HEIGHT * DEFAULT_K_NORM[1, 1]
    image = dot_image(WIDTH / 2, HEIGHT / 2 + focal_y / 3.0, radius=1.5)
    moved = centroid(render_view(image, pose(translation=(0, 0, 1.0)), scene=scene))
    assert abs(moved[1] - (HEIGHT / 2 + focal_y / 2.0)) < 0.75
    assert abs(moved[0] - WIDTH / 2) < 0.5


def test_sideways_step_moves_near_ground_more_than_backdrop():
    scene = SceneDepth(camera_height=1.0, far_depth=4.0)
    step = pose(translation=(0.3, 0, 0))  # strafe right: content slides left, near content more
    sky = centroid(render_view(dot_image(WIDTH / 2, 20), step, scene=scene))
    ground = centroid(render_view(dot_image(WIDTH / 2, HEIGHT - 8), step, scene=scene))
    assert WIDTH / 2 - ground[0] > WIDTH / 2 - sky[0] > 1


def test_outside_of_the_image_is_smooth_fog_as_bright_as_the_image():
    image = fit_image(example(), WIDTH, HEIGHT)
    turned = render_view(image, pose(rot_y(math.radians(45)))).astype(float)
    # The right part of the view looks past the image border: not a dark hole, about as bright as the photo.
    far_right = turned[:, -10:]
    assert abs(far_right.mean() - image.mean()) < 0.2 * image.mean()
    # Smooth: neighbouring columns there barely differ (no hard structure, no streaks).
    assert np.abs(np.diff(far_right, axis=1)).mean() < 1.5
    # Still the scene's layout: bluer above the horizon, greener below.
    top, bottom = far_right[: HEIGHT // 4].mean(axis=(0, 1)), far_right[-HEIGHT // 4 :].mean(axis=(0, 1))
    assert top[2] - top[1] > bottom[2] - bottom[1] + 20


def test_looking_backwards_renders_fog_in_the_image_tones():
    image = fit_image(example(), WIDTH, HEIGHT)
    behind = render_view(image, pose(rot_y(math.pi), (0, 0, 0.5)))
    assert behind.shape == (HEIGHT, WIDTH, 3) and behind.dtype == np.uint8
    # Nothing the photo shows: no detail along rows, the mean tone of the photo overall, sky fog on top.
    assert np.abs(np.diff(behind.astype(float), axis=1)).max() <= 1
    assert abs(behind.mean() - image.mean()) < 0.2 * image.mean()
    assert behind[0, :, 2].mean() > behind[-1, :, 2].mean() + 20


def test_intrinsics_normalise_like_the_model_and_fov_matches():
    K_norm = normalize_intrinsics(np.array([[969.6969696969696, 0, 960], [0, 969.6969696969696, 540], [0, 0, 1]]))
    assert np.allclose(K_norm, [[0.505051, 0, 0.5], [0, 0.897868, 0.5], [0, 0, 1]], atol=1e-6)
    K_fov = intrinsics_from_fov(90.0, WIDTH, HEIGHT)
    image = dot_image(120, 30)
    rotation = pose(rot_y(math.radians(7)))
    assert np.array_equal(render_view(image, rotation, fov=90.0), render_view(image, rotation, K_fov))
    with pytest.raises(ValueError):
        render_view(image, rotation, K_fov, fov=90.0)


def test_render_view_output_size_and_bad_inputs():
    assert render_view(example(), np.eye(4), out_size=(64, 40)).shape == (40, 64, 3)
    with pytest.raises(ValueError):
        render_view(example().astype(np.float32), np.eye(4))
    with pytest.raises(ValueError):
        render_view(example(), np.eye(3))


def test_fit_image_centre_crops_to_the_output_aspect():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255  # the middle third is white
    fitted = fit_image(image, 50, 50)
    assert fitted.shape == (50, 50, 3) and fitted.min() == 255


@pytest.mark.parametrize("spec", ["w-4", "w-3, right-4, d-4", "s-1, a-1, up-2, down-1, left-3"])
def test_frame_count_is_four_per_latent_plus_one(spec):
    trajectory = resolve(spec)
    frames = list(preview_frames(example(), trajectory, 48, 32))
    assert len(frames) == 4 * (trajectory.num_latents - 1) + 1 == trajectory.num_frames
    assert frame_poses(trajectory).shape == (len(frames), 4, 4)
    assert frame_intrinsics(trajectory).shape == (len(frames), 3, 3)
    assert frame_actions(trajectory).shape == (len(frames),)


def test_single_latent_trajectory_is_one_frame():
    assert len(list(preview_frames(example(), Trajectory(np.eye(4)[None]), 48, 32))) == 1


def test_frame_poses_hit_latents_and_interpolate_between():
    trajectory = resolve("w-2, right-2")
    poses = frame_poses(trajectory)
    assert np.allclose(poses[::4], trajectory.c2w)
    # Halfway between latents 0 and 1 (frame 2): half the 0.08 step, no rotation.
    assert np.allclose(poses[2][:3, 3], [0, 0, 0.04]) and np.allclose(poses[2][:3, :3], np.eye(3))
    # Frame 13 is a quarter of the way through the 3° yaw from latent 3 to 4.
    relative = np.linalg.inv(poses[12]) @ poses[13]
    assert np.allclose(relative[:3, :3], rot_y(math.radians(0.75)), atol=1e-9)
    for matrix in poses:
        assert np.allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-12)


def test_frame_poses_slerp_takes_the_short_way_round():
    c2w = np.stack([pose(rot_y(math.radians(170))), pose(rot_y(math.radians(-170)))])
    middle = frame_poses(Trajectory(c2w))[2]
    assert np.allclose(middle[:3, :3], rot_y(math.pi), atol=1e-9)


def test_frame_actions_show_the_move_towards_each_latent():
    trajectory = resolve("w-1, right-1")  # actions [0, 9, 1]
    assert frame_actions(trajectory).tolist() == [9, 9, 9, 9, 9, 1, 1, 1, 1]


def test_active_keys_cover_compound_actions():
    assert active_keys(0) == frozenset()
    assert active_keys(9) == {"W"}
    assert active_keys(5 * 9 + 5) == {"W", "D", "right", "up"}
    assert active_keys(8 * 9 + 8) == {"S", "A", "left", "down"}
    with pytest.raises(ValueError):
        active_keys(81)


def changed_box(action: int, width: int = 832, height: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """Pixels where the HUD for ``action`` differs from the idle HUD, and the lit-key colour there."""
    black = np.zeros((height, width, 3), np.uint8)
    hud = Hud(width, height)
    difference = np.any(hud.draw(black, action) != hud.draw(black, 0), axis=2)
    return difference, hud.draw(black, action)[difference]


def test_hud_lights_the_keys_of_each_action():
    forward, colours = changed_box(9)
    rows, columns = np.nonzero(forward)
    assert columns.max() < 832 / 2 and rows.min() > 480 / 2  # W is in the bottom-left cluster
    assert np.median(colours[:, 2]) > 2 * np.median(colours[:, 0])  # lit blue
    turn, _ = changed_box(1)
    assert np.nonzero(turn)[1].min() > 832 / 2  # the right arrow is bottom-right
    compound, _ = changed_box(5 * 9 + 5)
    assert compound.sum() > forward.sum() + turn.sum()  # W, D, right and up all lit


def test_hud_scales_with_the_frame_and_leaves_the_rest_untouched():
    small, _ = changed_box(9, 416, 240)
    large, _ = changed_box(9, 832, 480)
    assert 3.0 < large.sum() / small.sum() < 5.0
    frame = fit_image(example(), 416, 240)
    drawn = draw_hud(frame, 0)
    assert np.array_equal(drawn[: 240 // 2], frame[: 240 // 2])  # the top half has no overlay
    assert not np.array_equal(drawn, frame)


def test_tiny_frames_still_get_a_hud():
    assert draw_hud(np.zeros((24, 32, 3), np.uint8), 45).shape == (24, 32, 3)


def test_example_images_are_bundled_small_scene_pngs():
    for path in EXAMPLE_IMAGES.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (832, 480)
            pixels = np.asarray(image.convert("RGB"), dtype=float)
        assert path.stat().st_size < 300_000
        # Sky above, ground below, with texture: not a flat fill.
        assert pixels.std() > 20
