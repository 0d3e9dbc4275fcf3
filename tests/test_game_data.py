"""Game key logs (#24): MatrixGame2 / Zelda layouts as trajectories and back, first and third person (the
official tps labels), key logs as training actions, and the third-person synthetic set trained end to end
with a validation HUD that shows the keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trajectories import keys
from trajectories.actions import compute_actions
from trajectories.errors import TrajectoryError
from trajectories.keys import LAYOUTS, KeyLog, KeySettings


def latent_aligned_log(layout: str, num_latents: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random keys (every key of the layout, opposite keys too) and mouse deltas held for whole latents."""
    rng = np.random.default_rng(seed)
    num_frames = 4 * (num_latents - 1) + 1
    keyboard, mouse = np.zeros((num_frames, len(LAYOUTS[layout]))), np.zeros((num_frames, 2))
    for latent in range(1, num_latents):
        rows = slice(4 * latent - 3, 4 * latent + 1)
        keyboard[rows] = rng.integers(0, 2, keyboard.shape[1])
        mouse[rows] = rng.normal(0.0, 1.0, 2) * (rng.random() < 0.7)
    return keyboard, mouse


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("view", ["first", "third"])
def test_keys_trajectory_keys_round_trip(layout, view):
    settings = KeySettings(layout=layout, view=view)
    log = KeyLog(*latent_aligned_log(layout), settings)
    trajectory = keys.to_trajectory(log)
    assert trajectory.num_latents == 9
    back = keys.to_keys(trajectory, settings)
    movement, degrees = log.controls()
    back_movement, back_degrees = back.controls()
    assert back.keyboard.shape == log.keyboard.shape
    np.testing.assert_array_equal(back_movement[1:], movement[1:])
    np.testing.assert_allclose(back_degrees[1:], degrees[1:], atol=1e-9)
    # and the poses of the returned log are the trajectory's
    np.testing.assert_allclose(keys.to_trajectory(back).c2w, trajectory.c2w, atol=1e-9)
    if layout == "matrixgame2":
        # without turn keys nothing folds: the raw arrays come back, opposite keys cancelled
        np.testing.assert_allclose(back.mouse[1:], log.mouse[1:], atol=1e-9)


def test_third_person_labels_follow_the_official_tps_rule():
    # W for two latents, then W while turning right: the orbit translates the camera sideways
    keyboard, mouse = np.zeros((13, 4)), np.zeros((13, 2))
    keyboard[1:, 0] = 1.0
    mouse[9:, 1] = 2.0
    first = keys.to_trajectory(KeyLog(keyboard, mouse, KeySettings(view="first")))
    third = keys.to_trajectory(KeyLog(keyboard, mouse, KeySettings(view="third")))
    assert list(first.actions) == [0, 9, 9, 10]  # W, W, W+right
    assert list(third.actions) == [0, 9, 9, 1]  # W, W, right only: the tps rule
    # the orbit swings the third-person camera sideways; the first-person one mostly turns on the spot
    sideways = [abs(path.c2w[3, 0, 3] - path.c2w[2, 0, 3]) for path in (first, third)]
    assert sideways[1] > 5 * sideways[0]
    # the labels are the pose-derived ones of the tps rule, and training derives them from the keys alike
    from worker.training.controls import labels_from_controls

    assert list(compute_actions(third.c2w, third_person=True)) == list(third.actions)
    movement, degrees = KeyLog(keyboard, mouse).controls()
    assert list(labels_from_controls(movement, degrees, 4, third_person=True)) == list(third.actions)
    assert list(labels_from_controls(movement, degrees, 4)) == list(first.actions)


def write_npy_log(path, keyboard, mouse) -> None:
    np.save(path, np.array({"keyboard": keyboard.astype(np.float32), "mouse": mouse.astype(np.float32)}, dtype=object))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_traj_convert_from_and_to_keys_round_trips_per_frame_actions(tmp_path, cli, layout):
    keyboard, mouse = latent_aligned_log(layout, seed=3)
    write_npy_log(tmp_path / "log.npy", keyboard, mouse)
    code, _, err = cli("traj", "convert", "--from", "keys", str(tmp_path / "log.npy"),
                       str(tmp_path / "path.json"), "--view", "third")  # fmt: skip
    assert code == 0, err
    code, _, err = cli("traj", "convert", str(tmp_path / "path.json"), str(tmp_path / "back.json"),
                       "--to", "keys", "--view", "third", "--layout", layout)  # fmt: skip
    assert code == 0, err
    back = json.loads((tmp_path / "back.json").read_text())
    assert (back["format"], back["layout"], back["view"]) == ("worldplay-keys", layout, "third")
    settings = KeySettings(layout=layout, view="third")
    movement, degrees = keys.canonical_controls(keyboard, mouse, settings)
    back_movement, back_degrees = keys.canonical_controls(np.array(back["keyboard"]), np.array(back["mouse"]), settings)
    np.testing.assert_array_equal(back_movement[1:], movement[1:])
    np.testing.assert_allclose(back_degrees[1:], degrees[1:], atol=1e-5)  # the .npy log is float32
    # the JSON key log is read back without --from (its format tag) and gives the same trajectory
    code, out, _ = cli("traj", "show", str(tmp_path / "back.json"), "--json", "--view", "third")
    assert code == 0 and json.loads(out)["num_latents"] == 9
    # shown with the view's labels: the log's own (official JSON keeps poses, not labels)
    expected = keys.to_trajectory(keys.read(tmp_path / "back.json")).actions
    assert [row["action"] for row in json.loads(out)["latents"]] == list(expected)


def test_bad_key_logs_are_one_line_errors(tmp_path, cli):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    np.save(tmp_path / "evil.npy", np.array({"keyboard": Payload()}, dtype=object))
    with pytest.raises(TrajectoryError, match="not allowed in an action file"):
        keys.read(tmp_path / "evil.npy")
    (tmp_path / "narrow.json").write_text(json.dumps({"keyboard": [[1, 0, 0]] * 5}))
    code, _, err = cli("traj", "convert", "--from", "keys", str(tmp_path / "narrow.json"), str(tmp_path / "o.json"))
    assert code == 2 and "matrixgame2 keyboard must be [frames, 4]" in err and "Traceback" not in err
    code, _, err = cli("traj", "convert", "w-3", str(tmp_path / "o.json"), "--view", "third")
    assert code != 0 and "--view and --layout describe key logs" in err
    code, _, err = cli("traj", "convert", "--from", "keys:nes", str(tmp_path / "narrow.json"), str(tmp_path / "o.json"))
    assert code == 2 and "unknown key layout 'nes'" in err
    (tmp_path / "text.npy").write_text("keyboard,mouse\n")
    code, _, err = cli("traj", "convert", "--from", "keys", str(tmp_path / "text.npy"), str(tmp_path / "o.json"))
    assert code == 2 and "text.npy: not a .npy file" in err and "(hint: a key log is JSON or a MatrixGame2" in err
    assert len(err.strip().splitlines()) == 1


def test_training_reads_matrixgame2_npy_and_zelda_turn_keys(tmp_path):
    from worker.training.controls import read_controls
    from worldplay_cli.contract.training import ActionVocabulary

    keyboard = np.zeros((9, 6))
    keyboard[1:5, 0] = 1.0  # W
    keyboard[5:, 5] = 1.0  # turn_right
    mouse = np.zeros((9, 2))
    mouse[5:, 0] = 0.1
    write_npy_log(tmp_path / "zelda.npy", keyboard, mouse)
    vocabulary = ActionVocabulary(keys=list(LAYOUTS["zelda"]), degrees_per_unit=10.0, pitch_sign=-1, turn_degrees=2.0)
    canonical_keyboard, canonical_mouse = read_controls(tmp_path / "zelda.npy", vocabulary)
    assert canonical_keyboard[1:5, 0].tolist() == [1.0] * 4 and canonical_keyboard[5:].sum() == 0
    np.testing.assert_allclose(canonical_mouse[5:], [[-1.0, 2.0]] * 4, atol=1e-6)
    # a bare keyboard array (the other MatrixGame2 form)
    np.save(tmp_path / "bare.npy", keyboard[:, :4].astype(np.float32))
    bare_keyboard, bare_mouse = read_controls(tmp_path / "bare.npy", ActionVocabulary())
    assert bare_keyboard[1:5, 0].tolist() == [1.0] * 4 and not bare_mouse.any()


def test_third_person_synthetic_set_trains_and_its_validation_hud_shows_the_keys(tmp_path):
    from tests.train_fixtures import tiny_model_dir, train_config_data
    from trajectories.hud import Hud
    from worker.training.media import read_video
    from worker.training.prepare import PrepareOptions, prepare_dataset
    from worker.training.synthetic import SynthOptions, write_synthetic_dataset
    from worker.training.trainer import Hooks, Trainer
    from worldplay_cli.contract.training import TrainConfig

    options = SynthOptions(width=32, height=32, num_latents=9, view="third")
    write_synthetic_dataset(tmp_path / "raw", 1, 2, options, seed=1)
    manifest = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert manifest["vocabulary"]["view"] == "third"
    index = prepare_dataset(tmp_path / "raw", tmp_path / "prepared", tiny_model_dir(), PrepareOptions())
    assert len(index.clips) == 3 and not index.rejected
    # the shard lists its clips in its own metadata (what a stream reads instead of index.json)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "prepared" / index.clips[0].shard), framework="pt") as handle:
        listed = [record["id"] for record in json.loads(handle.metadata()["clips"])]
    assert listed == [clip.id for clip in index.clips]

    data = train_config_data(
        tmp_path / "run",
        max_steps=2,
        method={"name": "ar", "chunk_latents": 4, "window_latents": 8, "memory_probability": 0.0},
        validation={
            "every_steps": 2,
            "run_at_start": False,
            "max_clips": 2,
            "sampling_steps": 1,
            "num_latents": 8,
            "metrics": ["psnr"],
        },  # fmt: skip
    )
    # streamed from its shards, checkpointed every step
    data["data"].update({"path": str(tmp_path / "prepared"), "streaming": True})
    data["checkpoint"]["every_steps"] = 1
    records: list[dict] = []
    Trainer(TrainConfig.model_validate(data), hooks=Hooks(on_metrics=records.append)).run()
    losses = {record["step"]: record["loss"] for record in records if record["kind"] == "train"}
    assert sorted(losses) == [1, 2]
    # the stream's cursor is in the checkpoint, and a resume from step 1 trains step 2 on the same sample
    state = torch.load(tmp_path / "run" / "checkpoint-1" / "training_state.pt", weights_only=True)
    assert state["data"] == {"sources": [{"draw": 0, "epoch": 0, "shard": 0, "record": 0}]}
    resumed_data = {**data, "validation": None, "checkpoint": {**data["checkpoint"], "output_dir": str(tmp_path / "b")}}
    resumed: list[dict] = []
    Trainer(
        TrainConfig.model_validate(resumed_data),
        resume_from=tmp_path / "run" / "checkpoint-1",
        hooks=Hooks(on_metrics=resumed.append),
    ).run()
    assert [record["loss"] for record in resumed if record["kind"] == "train"] == [losses[2]]

    # val-000 walks forward (W), val-001 backward (S): the HUD lights W on the first, S on the second
    step_dir = tmp_path / "run" / "validation" / "step-000002"
    hud = Hud(32, 32)
    (_, (left, top)) = hud._clusters[0]
    step = hud.key + hud.gap

    def blue_excess(frames, column, row):
        x0, y0 = left + column * step + 1, top + row * step + 1
        region = frames[1:, y0 : y0 + hud.key - 2, x0 : x0 + hud.key - 2].astype(float)
        return float((region[..., 2] - region[..., 0]).mean())

    forward = read_video(step_dir / "val-000_hud.mp4").frames
    backward = read_video(step_dir / "val-001_hud.mp4").frames
    assert forward.shape == (29, 32, 32, 3)
    w_key, s_key = (1, 0), (1, 1)
    assert blue_excess(forward, *w_key) > blue_excess(backward, *w_key) + 25
    assert blue_excess(backward, *s_key) > blue_excess(forward, *s_key) + 25


def test_data_import_reads_fastvideo_annotations_and_merge_files(tmp_path, cli):
    from worldplay_cli.contract.training import load_source_manifest

    games = tmp_path / "games"
    games.mkdir()
    annotation = [
        {"path": "videos/run 1.mp4", "cap": "a hero crosses a field", "action_path": "actions/run1.npy"},
        {"path": "videos/run2.mp4", "cap": "", "action_path": "actions/run2.npy"},
    ]
    (games / "annotation.json").write_text(json.dumps(annotation))
    (tmp_path / "merge.txt").write_text("games,games/annotation.json\n")
    code, out, err = cli("data", "import", str(tmp_path / "merge.txt"), str(tmp_path / "raw"), "--layout", "zelda",
                         "--view", "third", "--validation-every", "2", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["train"] == 1 and json.loads(out)["validation"] == 1
    manifest = load_source_manifest(tmp_path / "raw")
    assert manifest.fps == 25 and manifest.vocabulary.keys == list(LAYOUTS["zelda"])
    assert manifest.vocabulary.view == "third"
    first = manifest.clips[0]
    assert (first.id, first.prompt, first.split) == ("run-1", "a hero crosses a field", "train")
    assert first.video == str(games / "videos" / "run 1.mp4") and first.actions == str(games / "actions" / "run1.npy")
    code, _, err = cli("data", "import", str(games / "annotation.json"), str(tmp_path / "raw"))
    assert code != 0 and "already exists" in err
    (games / "bad.json").write_text(json.dumps([{"cap": "no video"}]))
    code, _, err = cli("data", "import", str(games / "bad.json"), str(tmp_path / "other"))
    assert code != 0 and "item 0 has no path or action_path" in err and "Traceback" not in err
