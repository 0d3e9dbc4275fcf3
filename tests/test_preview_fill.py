"""The preview's fill of areas outside the reference image, and telling the user how much of a view that is."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trajectories import PRESETS, Trajectory
from trajectories.coverage import coverage_warning, uncovered_fractions
from trajectories.geometry import rot_y
from trajectories.render import (
    DEFAULT_K_NORM,
    Reprojection,
    SceneDepth,
    ViewRenderer,
    fit_image,
    frame_intrinsics,
    frame_poses,
    preview_frames,
    render_view,
)
from worldplay_cli.assets import EXAMPLE_IMAGE
from worldplay_cli.contract.specs import ImageRef, JobSpec, TrajectoryRef

WIDTH, HEIGHT = 160, 96


def example() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))


def luma(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(float) @ np.array([0.299, 0.587, 0.114])


def last_frame_and_uncovered(preset: str) -> tuple[np.ndarray, np.ndarray]:
    """The preset's last preview frame (no HUD) and, independently of the renderer, which pixels of it
    the reference image does not cover."""
    trajectory = PRESETS[preset].trajectory()
    frame = list(preview_frames(example(), trajectory, WIDTH, HEIGHT, hud=False))[-1]
    poses = frame_poses(trajectory)
    relative = np.linalg.inv(poses[0]) @ poses
    intrinsics = frame_intrinsics(trajectory)
    reprojection = Reprojection(intrinsics[0], (WIDTH, HEIGHT), (WIDTH, HEIGHT), SceneDepth().for_trajectory(relative))
    covered = reprojection.covered(*reprojection.project(relative[-1], intrinsics[-1]))
    return frame, ~covered.reshape(HEIGHT, WIDTH)


@pytest.mark.parametrize("preset", ["orbit-left", "orbit-right"])
def test_an_orbits_last_frame_fills_the_unknown_with_fog_not_a_dark_flat_wedge(preset):
    frame, uncovered = last_frame_and_uncovered(preset)
    assert uncovered.mean() > 0.5  # the case the fill is for: most of the frame
    fog = frame[uncovered]
    # About as bright as the photo (the old fill was a 55 %-darkened edge colour), and nowhere near black.
    assert abs(luma(fog).mean() - luma(example()).mean()) < 20
    assert np.mean(luma(fog) < 60) < 0.01
    # Not one flat colour: it carries the scene's colours (sky above the horizon, ground below) ...
    upper, lower = fog[np.nonzero(uncovered)[0] < HEIGHT // 3], fog[np.nonzero(uncovered)[0] > 2 * HEIGHT // 3]
    assert upper[:, 2].mean() - upper[:, 1].mean() > lower[:, 2].mean() - lower[:, 1].mean() + 15
    assert len(np.unique(fog.reshape(-1, 3), axis=0)) > 100
    # ... but smoothly: no streaks or hard edges inside it.
    both = uncovered[:, 1:] & uncovered[:, :-1]
    assert np.abs(np.diff(frame.astype(float), axis=1))[both].mean() < 1.5


def test_covered_pixels_are_the_plain_bilinear_samples_of_the_image():
    """The fill must not leak into what the photo shows: a turned view's covered pixels are exactly the
    image looked up through the homography K·R·K⁻¹ (output pixel -> reference pixel), however much of
    the frame is fog."""
    image = fit_image(example(), WIDTH, HEIGHT)
    rotation = rot_y(math.radians(35))
    c2w = np.eye(4)
    c2w[:3, :3] = rotation
    rendered = render_view(image, c2w).astype(float)

    K = np.diag([WIDTH, HEIGHT, 1.0]) @ DEFAULT_K_NORM
    column, row = np.meshgrid(np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5)
    points = K @ rotation @ np.linalg.inv(K) @ np.stack([column.ravel(), row.ravel(), np.ones(column.size)])
    x, y = points[0] / points[2] - 0.5, points[1] / points[2] - 0.5
    inside = (points[2] > 0) & (x >= 0) & (x <= WIDTH - 1) & (y >= 0) & (y <= HEIGHT - 1)
    assert 0.2 < inside.mean() < 0.8
    x0, y0 = np.minimum(x[inside].astype(int), WIDTH - 2), np.minimum(y[inside].astype(int), HEIGHT - 2)
    wx, wy = (x[inside] - x0)[:, None], (y[inside] - y0)[:, None]
    source = image.astype(float)
    expected = (
        source[y0, x0] * (1 - wx) * (1 - wy)
        + source[y0, x0 + 1] * wx * (1 - wy)
        + source[y0 + 1, x0] * (1 - wx) * wy
        + source[y0 + 1, x0 + 1] * wx * wy
    )
    assert np.abs(rendered.reshape(-1, 3)[inside] - expected).max() <= 1.0


def test_the_fill_is_deterministic():
    image = fit_image(example(), WIDTH, HEIGHT)
    c2w = np.eye(4)
    c2w[:3, :3] = rot_y(math.radians(60))
    assert np.array_equal(render_view(image, c2w), render_view(image, c2w))


def test_render_with_coverage_reports_the_fog_fraction():
    image = fit_image(example(), WIDTH, HEIGHT)
    renderer = ViewRenderer(image, DEFAULT_K_NORM, (WIDTH, HEIGHT), SceneDepth())
    assert renderer.render_with_coverage(np.eye(4))[1] == 0.0
    c2w = np.eye(4)
    c2w[:3, :3] = rot_y(math.radians(89.4 / 2))  # half the horizontal field of view: the right half is fog
    frame, uncovered = renderer.render_with_coverage(c2w)
    # A bit more than half: turned, the image's top and bottom edges slope inwards towards the far side.
    assert 0.5 < uncovered < 0.56 and np.array_equal(frame, renderer.render(c2w))


def test_a_still_trajectory_is_fully_covered():
    assert np.array_equal(uncovered_fractions(Trajectory(np.tile(np.eye(4), (5, 1, 1))), 832, 480), np.zeros(5))
    assert uncovered_fractions(PRESETS["forward"].trajectory(), 832, 480).max() == 0.0


def test_an_orbit_leaves_most_of_the_image_and_agrees_with_the_rendered_frames():
    trajectory = PRESETS["orbit-left"].trajectory()
    fractions = uncovered_fractions(trajectory, WIDTH, HEIGHT)
    assert fractions.shape == (trajectory.num_latents,) and fractions[0] == 0.0
    assert fractions[-1] > 0.6 and np.all(np.diff(fractions) >= -1e-3)  # keeps turning away
    # The same fraction the renderer reports for the frame of each latent (4·i), on its own coarser grid.
    poses = frame_poses(trajectory)
    relative = np.linalg.inv(poses[0]) @ poses
    scene = SceneDepth().for_trajectory(relative)
    renderer = ViewRenderer(
        fit_image(example(), WIDTH, HEIGHT), frame_intrinsics(trajectory)[0], (WIDTH, HEIGHT), scene
    )
    latents = [0, 10, 20, 31]
    rendered = [renderer.render_with_coverage(relative[4 * latent])[1] for latent in latents]
    assert np.allclose(rendered, fractions[latents], atol=0.02)


def test_the_warning_names_the_first_mostly_uncovered_latent_and_what_to_change():
    trajectory = PRESETS["orbit-left"].trajectory()
    fractions = uncovered_fractions(trajectory, 832, 480)
    start = int(np.argmax(fractions > 0.5))
    warning = coverage_warning(trajectory, 832, 480)
    assert warning is not None and "\n" not in warning
    assert f"starting at latent {start}," in warning and f"before latent {start}" in warning
    assert f"{fractions[-1]:.0%} at latent 31" in warning and "shorter orbit or a smaller turn" in warning
    assert 0.5 >= fractions[start - 1]
    # Walking back is a different cause, with different advice.
    assert "fewer steps back" in coverage_warning(PRESETS["backward"].trajectory(), 832, 480)


@pytest.mark.parametrize("preset", ["forward", "strafe", "look-around", "walk-and-turn"])
def test_no_warning_while_the_view_stays_mostly_on_the_image(preset):
    assert coverage_warning(PRESETS[preset].trajectory(), 832, 480) is None


def test_the_hud_labels_frames_that_are_mostly_fog():
    trajectory = PRESETS["orbit-left"].trajectory()
    with_hud = list(preview_frames(example(), trajectory, 416, 240, hud=True))
    without = list(preview_frames(example(), trajectory, 416, 240, hud=False))
    fractions = uncovered_fractions(trajectory, 416, 240)
    top_left = (slice(0, 40), slice(0, 208))  # the label's corner; the key clusters sit at the bottom
    before = 4 * (int(np.argmax(fractions > 0.5)) - 2)
    assert np.array_equal(with_hud[before][top_left], without[before][top_left])
    labelled = np.any(with_hud[-1][top_left] != without[-1][top_left], axis=2)
    assert labelled.sum() > 200
    # Amber text on a dark box.
    text = with_hud[-1][top_left][labelled].astype(int)
    assert np.any((text[:, 0] > 200) & (text[:, 1] > 150) & (text[:, 2] < 140))


class RecordingReporter:
    def __init__(self):
        self.lines: list[str] = []

    def plan(self, weights):
        pass

    def stage(self, name):
        self.lines.append(f"stage: {name}")

    def update(self, *args, **kwargs):
        pass

    def log(self, message):
        self.lines.append(message)


class Inputs:
    def __init__(self, trajectory: Trajectory):
        self.trajectory = trajectory

    def load_image(self) -> np.ndarray:
        return example()

    def load_trajectory(self) -> Trajectory:
        return self.trajectory


def run_preview_engine(preset: str, tmp_path: Path) -> list[str]:
    from worker.engines.preview import PreviewEngine

    trajectory = PRESETS[preset].trajectory()
    spec = JobSpec(
        image=ImageRef(source="/x.png", sha256="0" * 64, width=832, height=480),
        trajectory=TrajectoryRef(source=preset, num_latents=32, num_frames=125, sha256="1" * 64),
        engine="preview",
        variant="ar-distilled",
        frames=125,
        steps=4,
        guidance=1.0,
        width=64,
        height=32,
        timeout_s=600,
    )
    reporter = RecordingReporter()
    result = PreviewEngine().run(spec, Inputs(trajectory), tmp_path, reporter)
    assert result.video.exists()
    return reporter.lines


def test_the_preview_engine_logs_the_warning_before_rendering(tmp_path):
    lines = run_preview_engine("orbit-right", tmp_path)
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert warnings == ["warning: " + coverage_warning(PRESETS["orbit-right"].trajectory(), 64, 32)]
    assert lines.index(warnings[0]) < lines.index("stage: render")


def test_the_preview_engine_logs_no_warning_for_a_covered_trajectory(tmp_path):
    assert not [line for line in run_preview_engine("forward", tmp_path) if "warning" in line]
