"""Prints `worldplay play` a few seconds into a preview session, as text (the screen of docs/play.md).

    python docs/make_play_screenshot.py

A real session (a private Redis, a private worker, the bundled meadow image), driven headless through
Textual's Pilot: walk forward, turn right, then the screenshot. The video's half blocks lose their colours
in text; `app.save_screenshot()` at the same point gives an SVG with them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldplay_cli import redis_server  # noqa: E402
from worldplay_cli.contract.settings import ServerSettings, Settings  # noqa: E402

SIZE = (110, 34)


def _shown_keys(client) -> str:
    from trajectories.actions import action_name

    return action_name(client.current.actions) if client.current is not None else ""


def screen_text(app) -> str:
    """The screen as plain text (the compositor's lines; colours and styles dropped)."""
    lines = ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]
    return "\n".join(line.rstrip() for line in lines)


async def shoot() -> str:
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import PlayRequest
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.launch import start_session

    session = start_session(Runtime(), PlayRequest(prompt="a sunny meadow, gentle hills", width=416, height=240), None)
    # Pilot's press waits for an idle app (never, while playing) up to a second a key: hold keys longer here.
    session.client.sampler.hold_window_s = 3.0
    app = PlayerApp(session.client, graphics="halfblock", queue=session.queue)
    try:
        async with app.run_test(size=SIZE) as pilot:
            while session.client.figures().chunks < 2:
                await pilot.pause(0.1)
            for _ in range(4):
                await pilot.press("w")
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline or "→" not in _shown_keys(session.client):
                await pilot.press("w", "right")
            text = screen_text(app)
            await pilot.press("q")
            while app.return_value is None:
                await pilot.pause(0.1)
    finally:
        session.close()
    return text


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(server=ServerSettings(data_dir=root / "redis"))
        redis_server.start(settings)
        try:
            os.environ.update(
                WORLDPLAY_HOME=str(root / "home"),
                WORLDPLAY_CONFIG=str(root / "config.toml"),
                WORLDPLAY_REDIS_URL=redis_server.redis_url(settings),
                WORLDPLAY_OUTPUT_ROOT=str(root / "out"),
            )
            text = asyncio.run(shoot())
        finally:
            redis_server.stop(settings)
    print(text)


if __name__ == "__main__":
    main()
