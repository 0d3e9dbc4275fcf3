"""The player's widgets: the video (half blocks, or kitty/sixel graphics through `textual-image`) and the key HUD.

Graphics: `resolve_graphics("auto")` asks `textual-image` (when installed) what the terminal supports; it must
run before the app starts, because the terminal can only be queried while Textual does not own it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual.containers import Container
from textual.widget import Widget
from textual.widgets import Static

from trajectories.actions import action_keys
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.tui.widgets import HalfBlockImage, image_size_for

if TYPE_CHECKING:
    from PIL import Image

GRAPHICS = ("auto", "kitty", "sixel", "halfblock")

# The play keys as the HUD (and `trajectories.actions.action_name`) writes them.
GLYPHS = {"w": "W", "a": "A", "s": "S", "d": "D", "up": "↑", "down": "↓", "left": "←", "right": "→"}
_ROWS = ((" ", "W", " ", " ", " ", "↑", " "), ("A", "S", "D", " ", "←", "↓", "→"))


def resolve_graphics(choice: str) -> str:
    """`kitty`, `sixel` or `halfblock` for `--graphics CHOICE`; `auto` is what the terminal supports."""
    if choice not in GRAPHICS:
        raise BadInput(f"--graphics {choice!r} is not a mode", f"use one of: {', '.join(GRAPHICS)}")
    if choice == "halfblock":
        return choice
    try:
        # Both imports ask the terminal (what it supports, its cell size in pixels), which only works
        # before Textual takes it over.
        import textual_image.widget  # noqa: F401
        from textual_image import renderable
    except ImportError:
        if choice == "auto":
            return "halfblock"
        raise BadInput(f"--graphics {choice} needs the textual-image package", "pip install textual-image") from None
    if choice != "auto":
        return choice
    return {renderable.TGPImage: "kitty", renderable.SixelImage: "sixel"}.get(renderable.Image, "halfblock")


class HalfBlockVideo(HalfBlockImage):
    """Frames drawn with half blocks, scaled to fit the widget (works in any terminal)."""

    def __init__(self, *, id: str | None = None):  # noqa: A002
        super().__init__(id=id)
        self._frame: Image.Image | None = None

    def show(self, frame: Image.Image) -> None:
        from PIL import Image

        self._frame = frame
        width, height = image_size_for(frame.width / frame.height, self.size.width, self.size.height)
        if width and height:
            self.set_image(np.asarray(frame.resize((width, height), Image.Resampling.BILINEAR)))

    def on_resize(self) -> None:
        if self._frame is not None:
            self.show(self._frame)


class GraphicsVideo(Container):
    """Frames as kitty or sixel graphics: a `textual-image` widget inside (public API only), fitted to the area."""

    DEFAULT_CSS = """
    GraphicsVideo > * {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(self, graphics: str, *, id: str | None = None):  # noqa: A002
        super().__init__(id=id)
        from textual_image.widget import SixelImage, TGPImage

        self.picture = (TGPImage if graphics == "kitty" else SixelImage)()

    def compose(self):
        yield self.picture

    def show(self, frame: Image.Image) -> None:
        self.picture.image = frame


def video_widget(graphics: str) -> Widget:
    """The video area for a resolved graphics mode; each has `show(PIL image)`."""
    return HalfBlockVideo(id="video") if graphics == "halfblock" else GraphicsVideo(graphics, id="video")


def key_cluster(lit: set[str]) -> Text:
    """W/A/S/D and the arrows in two rows, the lit ones (glyphs of `GLYPHS`) highlighted."""
    text = Text()
    for row in _ROWS:
        for glyph in row:
            if glyph == " ":
                text.append("   ")
            else:
                # brackets as well as the colour: a lit key reads the same in a monochrome terminal
                text.append(
                    f"[{glyph}]" if glyph in lit else f" {glyph} ", style="bold reverse" if glyph in lit else "dim"
                )
        text.append("\n")
    text.rstrip()
    return text


def applied_glyphs(action: int) -> set[str]:
    movement, arrows = action_keys(action)
    return set(movement) | set(arrows)


class KeysHud(Static):
    """Two key clusters: the keys held now (the next samples), and the keys of the frame on screen."""

    def show(self, held: list[str], action: int | None) -> None:
        text = Text("held\n", style="bold")
        text.append_text(key_cluster({GLYPHS[key] for key in held}))
        text.append("\n\nshown\n", style="bold")
        text.append_text(key_cluster(applied_glyphs(action) if action is not None else set()))
        self.update(text)
