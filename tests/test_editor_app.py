"""`worldplay traj edit` driven through Textual's Pilot: keys in, Trajectory out."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from textual.command import CommandList

from trajectories import PRESETS, load_trajectory, parse_pose_string
from trajectories.formats import to_nerfstudio
from tui_util import settle
from worldplay_cli.tui.editor.app import EditorApp, EditorScreen
from worldplay_cli.tui.editor.document import document_from_trajectory
from worldplay_cli.tui.editor.keymap import COMMANDS
from worldplay_cli.tui.editor.screens import ConfirmQuitScreen, HelpScreen, PathScreen, PresetScreen
from worldplay_cli.tui.editor.state import EditorState

SIZE = (80, 24)


def make_app(document=None, **kwargs) -> EditorApp:
    model = kwargs.pop("model", "ar")
    frames = kwargs.pop("frames", None)
    return EditorApp(EditorState(document, model=model, frames=frames), **kwargs)


async def test_keys_author_the_trajectory():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "w", "w", "right", "d", "up", "s", "a", "left", "down", "h")
        trajectory = app.state.trajectory()
    assert trajectory == parse_pose_string("w-3, right-1, d-1, up-1, s-1, a-1, left-1, down-1, hold-1")


async def test_count_prefix_chords_and_latches():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8", "w", "plus", "right")  # 8 x W, then + → turns all eight into W+→
        await pilot.press("W", "2", "left", "W")  # latch forward: two W+← ; release
        await pilot.press("shift+up", "d", "shift+up")  # latch look-up: one D+↑
        await pilot.press("1", "2", "s")
        trajectory = app.state.trajectory()
    assert trajectory == parse_pose_string("w+right-8, w+left-2, d+up-1, s-12")
    assert [int(a) for a in trajectory.actions[:2]] == [0, 10]


async def test_undo_redo_replace_delete_and_cursor():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "w", "comma", "comma", "r", "right")
        assert app.state.document.pose_string() == "w-1, right-1, w-2"
        await pilot.press("x")
        assert app.state.document.pose_string() == "w-3"
        await pilot.press("u")
        assert app.state.document.pose_string() == "w-1, right-1, w-2"
        await pilot.press("u")
        assert app.state.document.pose_string() == "w-4"
        await pilot.press("ctrl+r")
        assert app.state.document.pose_string() == "w-1, right-1, w-2"
        await pilot.press("home", "full_stop", "v", "full_stop", "y", "end", "p")
        assert app.state.document.pose_string() == "w-1, right-1, w-3, right-1"  # equal neighbours merge


async def test_edit_as_text_shows_errors_inline_and_applies_valid_text():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "w", "e")
        text_area = app.screen.query_one("#segment-text")
        assert text_area.has_focus
        await pilot.press("end", "enter", "W", "minus", "4")
        error = str(app.screen.query_one("#segment-error").render())
        assert "line 2" in error and "unknown action 'W'" in error and "did you mean 'w'" in error
        assert app.state.document.pose_string() == "w-3"  # the bad text changed nothing
        await pilot.press("backspace", "backspace", "backspace", "d", "minus", "4")
        assert str(app.screen.query_one("#segment-error").render()) == ""
        assert app.state.document.pose_string() == "w-3, d-4"
        await pilot.press("escape", "u")  # one undo step for the whole text edit
        assert app.state.document.pose_string() == "w-3"
        assert app.screen.query_one("#segment-text").text == "w-3"


async def test_invalid_text_is_kept_with_its_error_when_leaving_text_mode():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "w", "e", "end", "enter", *"jump", "minus", "2")
        await pilot.press("escape")  # leave text mode with text that does not parse
        text_area = app.screen.query_one("#segment-text")
        assert not text_area.has_focus
        assert text_area.text == "w-3\njump-2"  # kept, not replaced by the path's text
        error = str(app.screen.query_one("#segment-error").render())
        assert "line 2" in error and "unknown action 'jump'" in error
        assert app.state.document.pose_string() == "w-3"  # and not applied
        assert any("not applied" in n.message and "'jump'" in n.message for n in app._notifications)
        await pilot.press(
            "e", "backspace", "backspace", "backspace", "backspace", "backspace", "backspace", "d", "minus", "2"
        )
        assert app.state.document.pose_string() == "w-3, d-2"
        await pilot.press("escape")
        assert str(app.screen.query_one("#segment-error").render()) == ""
        await pilot.press("e", "end", "enter", "x", "escape", "w")  # keys change the path: the text follows it
        assert app.state.num_latents == 7 and "x" not in text_area.text
        assert text_area.text == app.state.document.text()
        assert str(app.screen.query_one("#segment-error").render()) == ""


async def test_fix_length_for_model_and_frames():
    app = make_app(model="bi")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "w", "f")
        assert app.state.num_latents == 16 and app.state.validation().ok
        await pilot.press("m")  # ar: 16 is fine too
        assert app.state.model == "ar" and app.state.validation().ok
        await pilot.press("1", "w", "t")
        assert app.state.num_latents == 16
    app = make_app(frames=61)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "0", "w", "t")
        assert app.state.num_latents == 16 and app.state.validation().ok
        assert app.state.trajectory().num_frames == 61


async def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "walk.json"
    app = make_app(path=path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8", "w", "plus", "right", "4", "d", "2", "up", "f", "ctrl+s")
        assert not app.state.dirty
        saved = app.state.trajectory()
        await pilot.press("ctrl+q")
    assert app.return_value.saved and app.return_value.path == path
    assert load_trajectory(path) == saved
    assert (tmp_path / "walk.pose.txt").read_text().strip() == "w+right-8, d-4, up-2, hold-1"
    assert saved == parse_pose_string("w+right-8, d-4, up-2, hold-1")
    reopened = make_app(document_from_trajectory(load_trajectory(path)), path=path)
    async with reopened.run_test(size=SIZE):
        assert reopened.state.trajectory() == saved
        assert reopened.state.document.text() == "w+right-8\nd-4\nup-2\nhold-1"


async def test_save_as_prompts_for_a_path(tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "s", "ctrl+s")
        assert isinstance(app.screen, PathScreen)
        app.screen.query_one("#path-input").value = str(tmp_path / "missing" / "x.json")
        await pilot.press("enter")
        assert "cannot write" in str(app.screen.query_one("#path-error").render())
        app.screen.query_one("#path-input").value = str(tmp_path / "back.json")
        await pilot.press("enter")
        assert isinstance(app.screen, EditorScreen) and not app.state.dirty
    assert load_trajectory(tmp_path / "back.json") == parse_pose_string("s-4")


async def test_unsaved_changes_guard():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "ctrl+q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, EditorScreen) and app.is_running
        await pilot.press("ctrl+q")
        await pilot.click("#discard")
    assert app.return_value.saved is False and app.return_value.num_latents == 2


async def test_q_quits_like_the_dashboard_with_the_unsaved_changes_guard():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("escape")
        await pilot.press("e", "end", "q")  # in the text box q is just a letter
        assert app.screen.query_one("#segment-text").text == "w-1q" and app.is_running
        await pilot.press("backspace", "escape", "q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.click("#discard")
    assert app.return_value.saved is False
    clean = make_app()
    async with clean.run_test(size=SIZE) as pilot:
        await pilot.press("q")
    assert clean.return_value is not None and clean.return_value.num_latents == 1


async def test_unsaved_changes_guard_can_save_first(tmp_path):
    app = make_app(path=tmp_path / "kept.json")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "d", "ctrl+q")
        await pilot.click("#save")
    assert app.return_value.saved
    assert load_trajectory(tmp_path / "kept.json") == parse_pose_string("d-3")


async def test_presets_menu_and_import(tmp_path):
    nerfstudio = tmp_path / "path.json"
    nerfstudio.write_text(json.dumps(to_nerfstudio(parse_pose_string("d-3, left-5"))))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "P")
        assert isinstance(app.screen, PresetScreen)
        names = list(PRESETS)
        await pilot.press(*["down"] * names.index("orbit-left"), "enter")
        assert app.state.trajectory() == PRESETS["orbit-left"].trajectory()
        await pilot.press("ctrl+o")
        app.screen.query_one("#path-input").value = str(nerfstudio)
        await pilot.press("enter")
        assert isinstance(app.screen, EditorScreen)
        assert app.state.document.pose_string() == "d-3, left-5"
        assert np.allclose(app.state.trajectory().c2w, parse_pose_string("d-3, left-5").c2w, atol=1e-6)
        await pilot.press("u")
        assert app.state.trajectory() == PRESETS["orbit-left"].trajectory()
        await pilot.press("u")
        assert app.state.document.pose_string() == "w-1"


async def test_mouse_selects_latents_on_timeline_and_map():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6", "w")
        # Timeline: separator column, then two columns per latent: column 1 + 2 * 3 is latent 3.
        await pilot.click("#timeline", offset=(1 + 1 + 2 * 3, 2))
        assert app.state.cursor == 3
        plot = app.screen.query_one("#map")._plot
        column, row = np.rint(plot.cells[5]).astype(int)
        await pilot.click("#map", offset=(1 + column, 1 + row))
        assert app.state.cursor == 5


async def test_record_mode_appends_latents_in_real_time():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        # Keys pressed within one tick of the latent clock make one latent; tick by hand here so a
        # loaded machine cannot split the chord across two ticks.
        app.screen._record_timer.pause()
        await pilot.press("w", "right")
        app.screen._record_tick()
        assert app.state.num_latents == 2
        app.screen._record_timer.resume()
        await pilot.press("d")
        await settle(pilot, lambda: app.state.num_latents == 3)
        await pilot.press("R")
        assert not app.state.recording
    assert app.state.document.pose_string() == "w+right-1, d-1"


async def test_help_screen_and_command_palette():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen._table()
        titles = set(table.columns[1]._cells)
        assert {command.title for command in COMMANDS if not command.action.startswith("digit")} <= titles
        await pilot.press("escape")
        palette = {command.title for command in app.get_system_commands(app.screen)}
        assert {command.title for command in COMMANDS if command.palette} <= palette | {"Quit"}
        await pilot.press("2", "w", "ctrl+p")
        await pilot.press(*"Fix length: pad")
        command_list = app.screen.query_one(CommandList)
        await settle(pilot, lambda: command_list.option_count > 0 and command_list.highlighted is not None)
        await pilot.press("enter")
        await settle(pilot, lambda: app.state.num_latents == 4)


async def test_live_preview_follows_the_cursor():
    reference = np.zeros((90, 160, 3), dtype=np.uint8)
    reference[:, :80] = (200, 40, 40)
    reference[:, 80:] = (40, 40, 200)
    app = make_app(reference=reference)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("1", "0", "right")
        preview = app.screen.query_one("#preview")
        await settle(pilot, lambda: bool(preview._strips) and "latent 10" in str(preview.border_title))
        turned = [segment.style.bgcolor.triplet for strip in preview._strips for segment in strip]
        await pilot.press("home")
        await settle(pilot, lambda: "latent 0" in str(preview.border_title) and preview._strips)
        await pilot.pause(0.3)
        start = [segment.style.bgcolor.triplet for strip in preview._strips for segment in strip]
        assert turned != start


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_layout_fits(size):
    app = make_app(document_from_trajectory(PRESETS["figure-eight"].trajectory()))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for selector in ("#map", "#side", "#timeline", "#segments", "#summary"):
            region = app.screen.query_one(selector).region
            assert region.width >= 10 and region.height >= 3, selector
            assert region.right <= size[0] and region.bottom <= size[1] - 1, selector


def test_editor_event_loop_is_not_blocked_by_a_long_path():
    """A 512-latent path opens and takes a key press (the timing itself is in bench/editor.py)."""

    async def run() -> int:
        app = make_app(document_from_trajectory(parse_pose_string("w-100, w+right-100, d+up-100, left-100, s-111")))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("home", "w")
            return app.state.num_latents

    assert asyncio.run(run()) == 513


async def test_play_zoom_pan_and_fit():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8", "w", "home", "space")
        await settle(pilot, lambda: app.state.cursor >= 2)
        await pilot.press("space")
        stopped_at = app.state.cursor
        await pilot.pause(0.4)
        assert app.state.cursor == stopped_at and not app.screen.playing
        view = app.screen.query_one("#map")
        span = view._plot.units_per_column
        await pilot.press("equals_sign")
        assert view._plot.units_per_column < span
        await pilot.press("ctrl+right")
        assert view.viewport.pan_u > 0
        await pilot.press("z")
        assert view._plot.units_per_column == span and view.viewport.pan_u == 0
