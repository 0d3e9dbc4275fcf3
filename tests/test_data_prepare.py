"""Synthetic data and `data prepare`: clips, labels, alignment, shards, bad-clip reports, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from train_fixtures import SYNTH_LATENTS, TRAIN_CLIPS, VALIDATION_CLIPS, prepared_dataset, synthetic_raw, tiny_model_dir
from worldplay_cli.contract.errors import BadInput


def test_synthetic_clip_actions_agree_with_its_poses():
    from worker.training.controls import labels_from_controls, labels_from_poses
    from worker.training.synthetic import SynthOptions, make_clip

    options = SynthOptions(width=32, height=32, num_latents=12)
    for seed in range(4):
        clip = make_clip(seed, options)
        assert clip.frames.shape == (options.num_frames, 32, 32, 3)
        from_controls = labels_from_controls(clip.keyboard, clip.mouse, options.num_latents)
        # the official pose -> label rule (through `trajectories`) reads the same actions off the camera path
        assert np.array_equal(from_controls, labels_from_poses(clip.c2w, options.num_latents))
        # the camera stays inside the room and the view changes when it moves
        assert np.abs(clip.c2w[:, [0, 2], 3]).max() < 4.0
        if from_controls[1:].any():
            assert np.abs(clip.frames[-1].astype(int) - clip.frames[0]).mean() > 1.0


def test_validation_patterns_hold_one_action():
    from worker.training.controls import labels_from_controls
    from worker.training.synthetic import VALIDATION_PATTERNS, SynthOptions, make_clip

    options = SynthOptions(width=32, height=32, num_latents=8)
    clip = make_clip(7, options, VALIDATION_PATTERNS[0])  # W held
    labels = labels_from_controls(clip.keyboard, clip.mouse, options.num_latents)
    assert labels[0] == 0 and set(labels[1:]) == {9}


def test_a_scripted_walk_that_cannot_fit_the_room_is_an_error_before_anything_is_written(tmp_path):
    from worker.training.synthetic import SynthOptions, write_synthetic_dataset

    # 0.1 units per frame held for 19 latents is 7.6 units: more than the room's safe area
    options = SynthOptions(width=16, height=16, num_latents=20, move_step=0.1)
    with pytest.raises(BadInput) as error:
        write_synthetic_dataset(tmp_path / "raw", 1, 2, options)
    assert "leaves the room" in error.value.message and "--move-step" in error.value.hint
    assert not (tmp_path / "raw").exists()
    # without scripted clips the random walks are trimmed at the walls instead
    manifest = write_synthetic_dataset(
        tmp_path / "walks", 1, 0, SynthOptions(width=16, height=16, num_latents=20, move_step=0.1)
    )
    assert len(json.loads(manifest.read_text())["clips"]) == 1


def test_prepared_dataset_has_aligned_latents_controls_and_states():
    from worker.training.dataset import PreparedDataset

    dataset = PreparedDataset(prepared_dataset())
    index = dataset.index
    assert index.complete and not index.rejected
    assert len(dataset.clips("train")) == TRAIN_CLIPS and len(dataset.clips("validation")) == VALIDATION_CLIPS
    clip = dataset.load(dataset.clips("train")[0].id)
    frames = 4 * (SYNTH_LATENTS - 1) + 1
    assert clip.latent.shape == (index.latent_channels, SYNTH_LATENTS, 2, 2)
    assert clip.image_cond.shape == (index.latent_channels, 1, 2, 2)
    assert clip.keyboard.shape == (frames, 4) and clip.c2w.shape == (frames, 4, 4)
    assert clip.viewmats.shape == (SYNTH_LATENTS, 4, 4) and clip.labels.shape == (SYNTH_LATENTS,)
    # latent 0 is the reference camera; intrinsics are normalised by the principal point
    assert np.allclose(clip.viewmats[0].numpy(), np.eye(4), atol=1e-6)
    assert np.allclose(clip.intrinsics_norm[:, 0, 2].numpy(), 0.5)
    # prompt states keep only valid tokens; the text width is the tiny LLM's
    assert clip.prompt.llm.ndim == 2 and clip.prompt.llm.shape[1] == 16
    assert dataset.negative_prompt().llm.shape[1] == 16


def _copy_raw(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_raw(), raw)
    return raw, json.loads((raw / "dataset.json").read_text())


def _prepare(raw, out, **options):
    from worker.training.prepare import PrepareOptions, prepare_dataset

    return prepare_dataset(raw, out, tiny_model_dir(), PrepareOptions(**options))


@pytest.mark.slow
def test_bad_clips_are_reported_and_the_rest_is_prepared(tmp_path):
    from worker.training.media import read_video
    from worker.video import write_video

    raw, manifest = _copy_raw(tmp_path)
    clips = manifest["clips"]
    good = clips[0]
    # wrong frame rate
    video = read_video(raw / good["video"])
    write_video(video.frames, raw / "clips" / "fast.mp4", 30)
    # actions covering only 8 frames
    short_actions = json.loads((raw / good["actions"]).read_text())
    short_actions = {key: value[:8] for key, value in short_actions.items()}
    (raw / "clips" / "short.actions.json").write_text(json.dumps(short_actions))
    # a keyboard with the wrong number of columns
    (raw / "clips" / "wide.actions.json").write_text(
        json.dumps({"keyboard": [[0, 0, 0, 0, 1]] * 61, "mouse": [[0, 0]] * 61})
    )
    manifest["clips"] = [
        good,
        {**good, "id": "fast", "video": "clips/fast.mp4"},
        {**good, "id": "short", "actions": "clips/short.actions.json", "poses": None},
        {**good, "id": "wide", "actions": "clips/wide.actions.json"},
        {**good, "id": "blind", "actions": None, "poses": None},
        {**good, "id": "missing", "video": "clips/nothing.mp4"},
    ]
    (raw / "dataset.json").write_text(json.dumps(manifest))

    index = _prepare(raw, tmp_path / "out")

    assert [clip.id for clip in index.clips] == [good["id"]]
    reasons = {clip.id: clip.reason for clip in index.rejected}
    assert "30 fps" in reasons["fast"] and "16 fps" in reasons["fast"]
    assert "too short" in reasons["short"] and "actions 8" in reasons["short"]
    assert "keyboard must be [frames, 4]" in reasons["wide"]
    assert "no actions and no poses" in reasons["blind"]
    assert "unreadable video" in reasons["missing"]


@pytest.mark.slow
def test_prepare_resumes_after_an_interruption(tmp_path):
    raw, _ = _copy_raw(tmp_path)
    out = tmp_path / "out"
    seen = []

    def interrupt_after_third(done, total, clip_id, status):
        seen.append(clip_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    from worker.training.prepare import PrepareOptions, prepare_dataset

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, out, tiny_model_dir(), PrepareOptions(clips_per_shard=2), progress=interrupt_after_third)
    partial = json.loads((out / "index.json").read_text())
    assert not partial["complete"] and [clip["id"] for clip in partial["clips"]] == seen[:2]
    first_shard = out / partial["clips"][0]["shard"]
    written = first_shard.stat().st_mtime_ns

    resumed = []
    index = prepare_dataset(
        raw, out, tiny_model_dir(), PrepareOptions(clips_per_shard=2), progress=lambda *args: resumed.append(args[2])
    )

    assert index.complete and len(index.clips) == TRAIN_CLIPS + VALIDATION_CLIPS
    assert resumed[0] == seen[2] and seen[0] not in resumed
    assert first_shard.stat().st_mtime_ns == written


def test_missing_model_dir_and_settings_mismatch_are_clear_errors(tmp_path):
    from worker.training.prepare import PrepareOptions, prepare_dataset

    with pytest.raises(BadInput, match="does not exist"):
        prepare_dataset(synthetic_raw(), tmp_path / "out", tmp_path / "nowhere")
    with pytest.raises(BadInput, match="other settings"):
        prepare_dataset(synthetic_raw(), prepared_dataset(), tiny_model_dir(), PrepareOptions(width=64, height=64))


def test_alignment_keeps_4k_plus_1_frames_and_reads_labels_at_frame_4i():
    from worker.training.controls import labels_from_controls

    keyboard = np.zeros((30, 4), np.float32)
    mouse = np.zeros((30, 2), np.float32)
    keyboard[4, 0] = 1  # W at frame 4 -> latent 1
    mouse[8, 1] = 1.0  # yaw right at frame 8 -> latent 2
    keyboard[5:8, 1] = 1  # frames between latent reads are ignored
    labels = labels_from_controls(keyboard, mouse, (30 - 1) // 4 + 1)
    assert labels.tolist() == [0, 9, 1, 0, 0, 0, 0, 0]


def test_official_action_files_and_vocabulary_signs(tmp_path):
    from worker.training.controls import read_controls
    from worldplay_cli.contract.training import ActionVocabulary

    path = tmp_path / "actions.json"
    path.write_text(
        json.dumps(
            {
                "0": {"move_action": "", "view_action": ""},
                "1": {"move_action": "WS", "view_action": "LU"},
                "2": {"move_action": "D", "view_action": "LR"},
            }
        )
    )
    keyboard, mouse = read_controls(path, ActionVocabulary(degrees_per_unit=2.0))
    assert keyboard.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]
    assert mouse.tolist() == [[0, 0], [2, 0], [0, 2]]
    # a dataset whose pitch is sign-flipped and whose columns come in another order
    path.write_text(json.dumps({"keyboard": [[1, 0, 0, 0, 0]], "mouse": [[0.5, -0.25]]}))
    vocabulary = ActionVocabulary(keys=["D", "A", "S", "W", "jump"], mouse=["yaw", "pitch"], pitch_sign=-1)
    keyboard, mouse = read_controls(path, vocabulary)
    assert keyboard.tolist() == [[0, 0, 0, 1]] and mouse.tolist() == [[0.25, 0.5]]
