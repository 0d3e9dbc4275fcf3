"""Textual apps of worldplay: the trajectory editor (`editor/`) and the job dashboard (`dashboard/`).

Nothing here is imported by `worldplay --help`; commands import their app inside the command function.
Helpers shared by several apps (the half-block image widget) live in `worldplay_cli.tui.widgets`.
"""
