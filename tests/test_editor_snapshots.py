"""SVG snapshots of the editor's main screen at 80x24 and 160x48, and of its help screen and submit dialog.

Regenerate after an intended visual change with `pytest tests/test_editor_snapshots.py --snapshot-update`
and review the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

from trajectories import PRESETS
from worldplay_cli.tui.editor.app import EditorApp
from worldplay_cli.tui.editor.document import document_from_trajectory
from worldplay_cli.tui.editor.state import EditorState


def test_main_screen_80x24(snap_compare):
    app = EditorApp(EditorState())
    assert snap_compare(
        app, terminal_size=(80, 24), press=["8", "w", "plus", "right", "4", "d", "2", "up", "v", "comma", "comma"]
    )


def test_main_screen_160x48_bi(snap_compare):
    app = EditorApp(EditorState(document_from_trajectory(PRESETS["figure-eight"].trajectory()), model="bi"))
    assert snap_compare(app, terminal_size=(160, 48), press=["home", "pagedown", "pagedown", "3", "full_stop"])


def test_help_screen_80x24(snap_compare):
    assert snap_compare(EditorApp(EditorState()), terminal_size=(80, 24), press=["question_mark"])


def test_submit_dialog_80x24(snap_compare):
    from textual.widgets import Input

    app = EditorApp(
        EditorState(), submitter=lambda *args: None, default_variant="ar-distilled", default_engine="preview"
    )

    async def run_before(pilot) -> None:
        await pilot.press("3", "w", "ctrl+g")
        for text_input in pilot.app.screen.query(Input):  # a blinking cursor would make the picture random
            text_input.cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
