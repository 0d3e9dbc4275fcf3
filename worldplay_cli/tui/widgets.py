"""Widgets shared by worldplay's Textual apps.

`HalfBlockImage` draws an RGB image in any terminal: every cell is an upper half block `▀` whose
foreground is one pixel and background the pixel below it, so a W x H cell area shows W x 2H pixels.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF = "▀"


def image_size_for(aspect: float, columns: int, rows: int) -> tuple[int, int]:
    """The largest (width, height) in pixels with `aspect` = width / height that fits `columns` x `rows` cells.

    Cells are half-block pixel pairs, so the height is even and at most `2 * rows`.
    """
    max_width, max_height = max(columns, 0), max(2 * rows, 0)
    if max_width < 2 or max_height < 2:
        return 0, 0
    width = min(max_width, round(max_height * aspect))
    height = min(max_height, round(width / aspect))
    return max(width, 2), max(height - height % 2, 2)


def half_block_strips(image: np.ndarray) -> list[Strip]:
    """One Strip per pair of pixel rows of an HxWx3 uint8 image (an odd last row gets a black partner)."""
    image = np.asarray(image, dtype=np.uint8)[:, :, :3]
    if image.shape[0] % 2:
        image = np.concatenate([image, np.zeros_like(image[:1])])
    styles: dict[tuple[int, ...], Style] = {}
    strips = []
    for top, bottom in zip(image[0::2], image[1::2]):
        pairs = np.concatenate([top, bottom], axis=1).tolist()
        segments = []
        run_key, run_length = None, 0
        for pair in pairs:
            key = tuple(pair)
            if key != run_key and run_length:
                segments.append(Segment(UPPER_HALF * run_length, styles[run_key]))
                run_length = 0
            if key not in styles:
                styles[key] = Style(color=Color.from_rgb(*key[:3]), bgcolor=Color.from_rgb(*key[3:]))
            run_key = key
            run_length += 1
        if run_length:
            segments.append(Segment(UPPER_HALF * run_length, styles[run_key]))
        strips.append(Strip(segments, len(pairs)))
    return strips


class HalfBlockImage(Widget):
    """An RGB image (HxWx3 uint8) drawn with half blocks, centred in the widget; blank without an image."""

    DEFAULT_CSS = """
    HalfBlockImage {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(
        self,
        image: np.ndarray | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ):  # noqa: A002
        super().__init__(name=name, id=id, classes=classes)
        self._strips: list[Strip] = []
        self._image_width = 0
        if image is not None:
            self.set_image(image)

    def set_image(self, image: np.ndarray | None) -> None:
        if image is None:
            self._strips, self._image_width = [], 0
        else:
            self._strips, self._image_width = half_block_strips(image), int(image.shape[1])
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        top = max(0, (height - len(self._strips)) // 2)
        if not top <= y < top + len(self._strips):
            return Strip.blank(width, self.rich_style)
        left = max(0, (width - self._image_width) // 2)
        strip = self._strips[y - top]
        if left:
            strip = Strip([Segment(" " * left, self.rich_style), *strip], left + strip.cell_length)
        return strip.crop_extend(0, width, self.rich_style)
