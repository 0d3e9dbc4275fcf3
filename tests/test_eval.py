"""`worldplay eval` metrics on videos whose truth is known: preview renders follow their trajectory exactly
(rotations are exact homographies), so the right trajectory must score near perfect and a wrong one, a
still video or a damaged one clearly worse."""

from __future__ import annotations

import json

import numpy as np
import pytest

WIDTH, HEIGHT = 128, 80
PATH = "w-4, right-6, left-6, s-4"  # out and back: walks, turns, comes back to the start
WRONG = "s-4, left-6, right-6, w-4"  # the mirror image of every move


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    from worldplay_cli.assets import __file__ as assets

    return np.asarray(Image.open(assets.replace("__init__.py", "example.png")).convert("RGB"))


@pytest.fixture(scope="module")
def render(image):
    from trajectories import resolve
    from trajectories.render import preview_frames

    return np.stack(list(preview_frames(image, resolve(PATH), WIDTH, HEIGHT, hud=False)))


def _evaluate(frames, spec, **options):
    from trajectories import resolve
    from trajectories.evaluation.report import evaluate

    return evaluate(frames, resolve(spec), **options)


@pytest.fixture(scope="module")
def scores(render):
    still = np.repeat(render[:1], len(render), axis=0)
    return {"right": _evaluate(render, PATH), "wrong": _evaluate(render, WRONG), "still": _evaluate(still, PATH)}


def test_camera_following_is_near_perfect_on_the_right_path_and_clearly_worse_otherwise(scores):
    right, wrong, still = (scores[name]["camera_following"] for name in ("right", "wrong", "still"))
    assert right["untracked"] == 0 and right["tracked"] == right["steps"] == 10
    # 3° per latent, 6° per step: the right path is read to well under a degree
    assert right["R_dist"] < 1.0
    assert wrong["R_dist"] > 5.0 and still["R_dist"] > 2.5
    # translation directions are noisier at 128x80 (little parallax), yet far from a reversed or absent move
    assert right["T_dist"] < 35.0
    assert wrong["T_dist"] > 120.0 and still["T_dist"] == 90.0


def test_flat_frames_are_untracked_not_guessed(render):
    flat = np.full_like(render, 128)
    result = _evaluate(flat, PATH)
    camera = result["camera_following"]
    assert camera["tracked"] == 0 and camera["untracked"] == camera["steps"]
    assert camera["R_dist"] is None and camera["T_dist"] is None
    assert "no motion to calibrate on" in result["action_following"]["skipped"]


def test_revisit_consistency_finds_the_return_and_sees_a_changed_world(render):
    from trajectories import resolve
    from trajectories.evaluation.revisit import revisit_pairs
    from trajectories.render import frame_poses

    pairs = [(earlier, later) for earlier, later, *_ in revisit_pairs(frame_poses(resolve(PATH)))]
    # the turn back passes the poses of the turn out, and the walk back ends where the walk began
    assert (0, 80) in pairs and (36, 44) not in pairs  # 36 and 44 never went 10° apart
    assert all(earlier < len(render) // 2 <= later for earlier, later in pairs)
    consistent = _evaluate(render, PATH)["revisit"]
    changed = render.copy()
    changed[len(render) // 2 :] = changed[len(render) // 2 :, ::-1]  # the world flipped upside down on the way back
    inconsistent = _evaluate(changed, PATH)["revisit"]
    assert consistent["count"] == inconsistent["count"] == len(pairs)
    assert consistent["psnr"] is None or consistent["psnr"] > 30  # None: identical frames
    assert inconsistent["psnr"] < 15 and inconsistent["ssim"] < 0.5 * consistent["ssim"]
    # a path that never comes back has no revisit to score
    assert _evaluate(render, "w-20")["revisit"] == {"pairs": [], "count": 0, "psnr": None, "ssim": None}


def test_drift_sees_a_rollout_that_washes_out_and_smears(render):
    import cv2

    steady = _evaluate(render, PATH)["drift"]
    damaged = render.copy()
    late = len(render) // 2
    damaged[late:] = np.stack([cv2.GaussianBlur(frame, (9, 9), 3) // 2 + 100 for frame in render[late:]])
    drifted = _evaluate(damaged, PATH)["drift"]
    assert len(steady["chunks"]) == len(drifted["chunks"]) == 6  # 4-latent chunks: 13 + 4 x 16 + 4 frames
    assert steady["drift"] < 0.1 and drifted["drift"] > 3 * steady["drift"]
    assert drifted["sharpness_ratio"] < 0.5 < steady["sharpness_ratio"]
    assert drifted["contrast_ratio"] < 0.7 and drifted["brightness_shift"] > 5


def test_action_following_and_reference_scores(render, scores):
    right, wrong, still = (scores[name]["action_following"] for name in ("right", "wrong", "still"))
    # the preview render is its own calibration reference: the right path scores exactly its reference
    assert right["pixel_epe"] == pytest.approx(right["reference_pixel_epe"], rel=0.05)
    assert wrong["pixel_epe"] > 2 * right["pixel_epe"] and still["pixel_epe"] > 1.3 * right["pixel_epe"]
    assert right["mean_flow_cosine"] > wrong["mean_flow_cosine"]
    noisy = np.clip(render.astype(int) + np.random.default_rng(0).integers(-30, 31, render.shape), 0, 255)
    reference = _evaluate(noisy.astype(np.uint8), PATH, reference=render)["reference"]
    assert 15 < reference["psnr"] < 30 and reference["ssim"] < 0.9
    assert _evaluate(render, PATH, reference=render)["reference"]["psnr"] is None  # identical: no finite PSNR


def test_the_eval_command_writes_eval_json_and_explains_bad_input(cli, tmp_path, render):
    from worker.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(iter(render), video, fps=24)
    code, out, err = cli("eval", str(video), "--trajectory", PATH, "--json")
    assert code == 0, err
    printed = json.loads(out)
    written = json.loads((tmp_path / "clip.eval.json").read_text())
    assert printed == written and written["version"] == 1 and written["frames"] == len(render)
    assert written["camera_following"]["R_dist"] < 1.0  # through the mp4 encoder too
    code, out, err = cli("eval", str(video), "--trajectory", PATH)
    assert code == 0 and "R_dist" in out and "revisit PSNR" in out
    code, out, err = cli("eval", str(video))
    assert code == 2 and err.count("\n") == 1 and "--trajectory" in err
    code, out, err = cli("eval", str(tmp_path / "missing.mp4"), "--trajectory", PATH)
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    code, out, err = cli("eval", str(tmp_path / "broken.mp4"), "--trajectory", PATH)
    assert code == 2 and err.count("\n") == 1 and "readable video" in err
