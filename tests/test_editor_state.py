"""The editor's document and key grammar, without a terminal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajectories import PRESETS, Trajectory, load_trajectory, parse_pose_string, save_trajectory
from trajectories.formats import to_nerfstudio
from trajectories.geometry import rot_z
from worldplay_cli.tui.editor.document import (
    Document,
    PathCache,
    document_from_trajectory,
    document_trajectory,
    steps_from_text,
)
from worldplay_cli.tui.editor.state import EditorState


def press(state: EditorState, keys: str) -> None:
    """Drive the state with a compact key script: digits, w/a/s/d, > < ^ v for turns, h hold, + combine."""
    turns = {">": "right", "<": "left", "^": "up", "v": "down"}
    for key in keys:
        if key.isdigit():
            state.digit(key)
        elif key in "wasd":
            state.action(key)
        elif key in turns:
            state.action(turns[key])
        elif key == "h":
            state.action("hold")
        elif key == "+":
            state.combine()
        else:
            raise AssertionError(key)


def test_keys_build_the_pose_string_and_its_exact_trajectory():
    state = EditorState()
    press(state, "3w>dd")
    assert state.document.pose_string() == "w-3, right-1, d-2"
    assert state.cursor == 6 and state.num_latents == 7
    assert state.trajectory() == parse_pose_string("w-3, right-1, d-2")
    assert [int(a) for a in state.cache.actions] == [0, 9, 9, 9, 1, 27, 27]


def test_count_prefix_combine_and_latch():
    state = EditorState()
    press(state, "8w+>")
    assert state.document.pose_string() == "w+right-8"
    state.toggle_latch("w")
    press(state, "2<^")
    state.toggle_latch("w")
    press(state, "s")
    assert state.document.pose_string() == "w+right-8, w+left-2, w+up-1, s-1"
    # The pressed key wins over a latched key on the same axis.
    state.toggle_latch("d")
    press(state, "a")
    assert state.document.pose_string().endswith("s-1, a-1")


def test_combine_without_an_insert_targets_the_cursor_latent():
    state = EditorState()
    press(state, "4w")
    state.goto(2)
    press(state, "+^")
    assert state.document.pose_string() == "w-1, w+up-1, w-2"


def test_replace_delete_backspace_and_cursor():
    state = EditorState()
    press(state, "6w")
    state.goto(2)
    state.replace()
    press(state, "2>")
    assert state.document.pose_string() == "w-1, right-2, w-3"
    assert state.cursor == 3
    state.digit("2")
    state.delete()
    assert state.document.pose_string() == "w-1, right-1, w-2"
    state.goto(4)
    state.backspace()
    assert state.document.pose_string() == "w-1, right-1, w-1" and state.cursor == 3
    state.goto(0)
    state.delete()
    assert "start pose" in state.message and state.num_latents == 4


def test_insert_in_the_middle_carries_the_rest_of_the_path():
    state = EditorState()
    press(state, "4w")
    end_before = state.cache.c2w[-1].copy()
    state.goto(1)
    press(state, ">")
    assert state.document.pose_string() == "w-1, right-1, w-3"
    # The walk after the turn is rotated with it: the path bends instead of breaking.
    assert not np.allclose(state.cache.c2w[-1], end_before)
    assert np.allclose(state.cache.c2w, parse_pose_string("w-1, right-1, w-3").c2w, atol=1e-12)


def test_copy_paste_selection_and_segment():
    state = EditorState()
    press(state, "2w3>")
    state.goto(3)
    state.copy()  # the segment under the cursor: right-3
    state.goto(state.num_latents - 1)
    state.digit("2")
    state.paste()
    assert state.document.pose_string() == "w-2, right-9"
    state.goto(1)
    state.toggle_selection()
    state.goto(3)
    state.copy()
    state.goto(0)
    state.paste()
    assert state.document.pose_string() == "w-2, right-1, w-2, right-9"
    state.goto(1)
    state.toggle_selection()
    state.goto(2)
    state.delete()
    assert state.document.pose_string() == "right-1, w-2, right-9"


def test_undo_redo():
    state = EditorState()
    press(state, "w>")
    state.undo()
    assert state.document.pose_string() == "w-1"
    state.undo()
    assert state.document.pose_string() is None and state.num_latents == 1
    state.undo()
    assert state.message == "nothing to undo"
    state.redo()
    state.redo()
    assert state.document.pose_string() == "w-1, right-1"
    press(state, "s")
    state.redo()
    assert state.message == "nothing to redo"


def test_text_edits_parse_errors_and_one_undo_step():
    state = EditorState()
    press(state, "w")
    assert state.apply_text("w-3\nw+right-4") is None
    assert state.apply_text("w-3\nw+right-4\nd-2") is None
    assert state.document.pose_string() == "w-3, w+right-4, d-2"
    error = state.apply_text("w-3\nW-4")
    assert error.startswith("line 2: pose string: unknown action 'W'") and "did you mean 'w'" in error
    assert state.document.pose_string() == "w-3, w+right-4, d-2"
    state.end_text_session()
    state.undo()
    assert state.document.pose_string() == "w-1"
    assert steps_from_text("# comment\nw-2, right-1\n\n") == list(
        Document().with_steps(steps_from_text("w-2\nright-1")).steps
    )


@pytest.mark.parametrize(
    ("model", "frames", "how", "latents"),
    [("ar", None, "pad", 8), ("ar", None, "trim", 4), ("bi", None, "pad", 16), ("ar", 125, "pad", 32)],
)
def test_fix_length(model, frames, how, latents):
    state = EditorState(model=model, frames=frames)
    press(state, "6w")
    assert not state.validation().ok
    state.fix(how)
    assert state.num_latents == latents and state.validation().ok
    if how == "pad":
        assert state.document.pose_string() == f"w-6, hold-{latents - 7}"


def test_fix_trim_to_frames_impossible_when_short():
    state = EditorState(frames=125)
    press(state, "6w")
    state.fix("trim")
    assert "cannot trim" in state.message and state.num_latents == 7


def test_step_sizes_and_model():
    state = EditorState()
    state.change_step("translation", +1)
    state.change_step("rotation", -1)
    press(state, "w>")
    assert state.document.pose_string() == "w:0.12-1, right:2-1"
    state.cycle_model()
    assert state.model == "bi" and state.chunk == 16


def test_record_mode_appends_one_latent_per_tick():
    state = EditorState()
    state.set_recording(True)
    press(state, "w>")
    assert state.num_latents == 1
    assert state.record_tick()
    assert not state.record_tick()
    press(state, "w")
    state.record_tick()
    assert state.document.pose_string() == "w+right-1, w-1"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_exactly(name):
    trajectory = PRESETS[name].trajectory()
    document = document_from_trajectory(trajectory)
    assert document.exact
    assert document_trajectory(document) == trajectory


def test_official_json_round_trip(tmp_path):
    state = EditorState()
    press(state, "3w+>2^8d")
    path = tmp_path / "t.json"
    save_trajectory(state.trajectory(), path)
    loaded = document_from_trajectory(load_trajectory(path))
    assert loaded == state.document
    assert document_trajectory(loaded) == state.trajectory()


def test_imported_motion_the_grammar_cannot_say_stays_exact(tmp_path):
    base = parse_pose_string("w-3, right-4").c2w.copy()
    base[2, :3, 3] += [0.0, -0.05, 0.0]  # a vertical move
    base[3:, :3, :3] = base[3:, :3, :3] @ rot_z(0.1)  # roll from latent 3 on
    shifted = np.array(base)
    shifted[:, :3, 3] += [5.0, 1.0, -2.0]
    trajectory = Trajectory(shifted)
    path = tmp_path / "ns.json"
    path.write_text(json.dumps(to_nerfstudio(trajectory)))
    document = document_from_trajectory(load_trajectory(path))
    assert document.has_imported and not document.exact and document.pose_string() is None
    assert "# imported-" in document.text()
    rebuilt = document_trajectory(document)
    assert np.allclose(rebuilt.c2w, load_trajectory(path).c2w, atol=1e-9)
    state = EditorState(document)
    assert state.apply_text("w-4").startswith("this path has imported poses")


def test_path_cache_matches_a_full_rebuild():
    state = EditorState()
    press(state, "20w5>10d")
    state.goto(7)
    press(state, "3^")
    fresh = PathCache()
    fresh.update(state.document)
    assert np.array_equal(fresh.c2w, state.cache.c2w)
    assert np.array_equal(fresh.actions, state.cache.actions)
    assert np.array_equal(state.cache.actions, state.trajectory().actions)


def test_half_block_image_pairs_pixel_rows():
    from worldplay_cli.tui.widgets import half_block_strips, image_size_for

    image = np.zeros((5, 3, 3), dtype=np.uint8)
    image[0] = (255, 0, 0)
    image[1] = (0, 0, 255)
    strips = half_block_strips(image)
    assert len(strips) == 3 and all(strip.cell_length == 3 for strip in strips)
    (segment,) = list(strips[0])
    assert segment.text == "▀▀▀"
    assert segment.style.color.triplet == (255, 0, 0) and segment.style.bgcolor.triplet == (0, 0, 255)
    assert image_size_for(16 / 9, 40, 10) == (36, 20)
    assert image_size_for(1.0, 1, 10) == (0, 0)
