"""Keyboard HUD for preview frames: W/A/S/D bottom-left, arrow keys bottom-right, active keys lit.

Drawn with PIL in the spirit of the official ``--with-ui`` overlay (70 px keys, 6 px gaps, 40 px margin at
480 px height, active colour (30, 120, 255)), scaled to the frame. It reads the 81-class action id, so it
works for any trajectory, including compound actions such as W+D with yaw right and pitch up.
When a frame looks mostly past the reference image, a small label top-left says how much of it does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Layout at the reference frame size; everything scales with min(height / 480, width / 832).
_REFERENCE_HEIGHT, _REFERENCE_WIDTH = 480, 832
_KEY, _GAP, _MARGIN = 70, 6, 40

_ACTIVE_FILL = (30, 120, 255, 220)
_IDLE_FILL = (20, 20, 20, 120)
_ACTIVE_EDGE = (255, 255, 255, 255)
_IDLE_EDGE = (255, 255, 255, 150)
_ACTIVE_GLYPH = (255, 255, 255, 255)
_IDLE_GLYPH = (255, 255, 255, 190)
_LABEL_FILL = (20, 20, 20, 150)
_LABEL_TEXT = (255, 200, 90, 255)  # amber: a caution about the preview, not part of the controls

# Action id = translation * 9 + rotation; the index order follows the action label definition.
_TRANSLATION_KEYS = ((), ("W",), ("S",), ("D",), ("A",), ("W", "D"), ("W", "A"), ("S", "D"), ("S", "A"))
_ROTATION_KEYS = (
    (),
    ("right",),
    ("left",),
    ("up",),
    ("down",),
    ("right", "up"),
    ("right", "down"),
    ("left", "up"),
    ("left", "down"),
)

# (key, column, row) within each 3x2 cluster.
_WASD_LAYOUT = (("W", 1, 0), ("A", 0, 1), ("S", 1, 1), ("D", 2, 1))
_ARROW_LAYOUT = (("up", 1, 0), ("left", 0, 1), ("down", 1, 1), ("right", 2, 1))
# Unit triangles pointing each way, in key-size fractions around the key centre.
_ARROW_SHAPES = {
    "up": ((0.0, -0.22), (0.22, 0.14), (-0.22, 0.14)),
    "down": ((0.0, 0.22), (0.22, -0.14), (-0.22, -0.14)),
    "left": ((-0.22, 0.0), (0.14, -0.22), (0.14, 0.22)),
    "right": ((0.22, 0.0), (-0.14, -0.22), (-0.14, 0.22)),
}


def active_keys(action: int) -> frozenset[str]:
    """Keys held for an action id: a subset of {W, A, S, D, up, down, left, right}."""
    if not 0 <= int(action) <= 80:
        raise ValueError(f"action id must be in 0..80, got {action}")
    translation, rotation = divmod(int(action), 9)
    return frozenset(_TRANSLATION_KEYS[translation] + _ROTATION_KEYS[rotation])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font still labels the keys.
        return ImageFont.load_default()


class Hud:
    """Draws the overlay on frames of one size; the overlay for each action id is rendered once."""

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        scale = min(self.height / _REFERENCE_HEIGHT, self.width / _REFERENCE_WIDTH)
        self.key = max(6, round(_KEY * scale))
        self.gap = max(1, round(_GAP * scale))
        self.margin = max(2, round(_MARGIN * scale))
        self.font = _font(max(6, round(self.key * 0.5)))
        cluster_width = 3 * self.key + 2 * self.gap
        cluster_height = 2 * self.key + self.gap
        top = max(0, self.height - self.margin - cluster_height)
        # Boxes (left, top) of the two clusters, clipped to the frame for very small frames.
        self._clusters = (
            (_WASD_LAYOUT, (min(self.margin, max(0, self.width - cluster_width)), top)),
            (_ARROW_LAYOUT, (max(0, self.width - self.margin - cluster_width), top)),
        )
        self._cluster_size = (cluster_width, cluster_height)
        self._label_font = _font(max(6, round(self.key * 0.32)))
        self._cache: dict[int, list[tuple[int, int, np.ndarray, np.ndarray]]] = {}
        self._labels: dict[int, tuple[int, int, np.ndarray, np.ndarray]] = {}

    def draw(self, frame: np.ndarray, action: int, uncovered: float | None = None) -> np.ndarray:
        """Return a copy of ``frame`` (HxWx3 uint8, the size given at construction) with the overlay.

        ``uncovered``, if given, is the fraction of the frame outside the reference image, shown as a label.
        """
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame must be {self.height}x{self.width}x3, got {frame.shape}")
        out = frame.copy()
        patches = self._patches(int(action))
        if uncovered is not None:
            patches = [*patches, self._label(round(100 * uncovered))]
        for left, top, colour, alpha in patches:
            region = out[top : top + colour.shape[0], left : left + colour.shape[1]]
            blended = region * (1.0 - alpha) + colour * alpha
            region[...] = (blended + 0.5).astype(np.uint8)
        return out

    def _patches(self, action: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        if action not in self._cache:
            keys = active_keys(action)
            self._cache[action] = [
                self._patch(self._cluster_image(layout, keys), left, top) for layout, (left, top) in self._clusters
            ]
        return self._cache[action]

    def _patch(self, image: Image.Image, left: int, top: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        rgba = np.asarray(image, dtype=np.float32)[: self.height - top, : self.width - left]
        return left, top, rgba[:, :, :3], rgba[:, :, 3:] / 255.0

    def _label(self, percent: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        if percent not in self._labels:
            text = f"outside the reference image: {percent}%"
            pad = max(1, round(self.key * 0.1))
            left, top, right, bottom = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox(
                (0, 0), text, font=self._label_font
            )
            label = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
            pen = ImageDraw.Draw(label)
            pen.rounded_rectangle((0, 0, label.width - 1, label.height - 1), radius=pad, fill=_LABEL_FILL)
            pen.text((pad - left, pad - top), text, fill=_LABEL_TEXT, font=self._label_font)
            corner = min(self.margin // 2, self.width - 1, self.height - 1)
            self._labels[percent] = self._patch(label, corner, corner)
        return self._labels[percent]

    def _cluster_image(self, layout: tuple[tuple[str, int, int], ...], keys: frozenset[str]) -> Image.Image:
        cluster = Image.new("RGBA", self._cluster_size, (0, 0, 0, 0))
        pen = ImageDraw.Draw(cluster)
        radius = max(1, round(self.key * 0.15))
        line = max(1, round(self.key * 0.04))
        for name, column, row in layout:
            lit = name in keys
            x0, y0 = column * (self.key + self.gap), row * (self.key + self.gap)
            pen.rounded_rectangle(
                (x0, y0, x0 + self.key - 1, y0 + self.key - 1),
                radius=radius,
                fill=_ACTIVE_FILL if lit else _IDLE_FILL,
                outline=_ACTIVE_EDGE if lit else _IDLE_EDGE,
                width=line,
            )
            centre = (x0 + self.key / 2.0, y0 + self.key / 2.0)
            glyph = _ACTIVE_GLYPH if lit else _IDLE_GLYPH
            if name in _ARROW_SHAPES:
                points = [(centre[0] + dx * self.key, centre[1] + dy * self.key) for dx, dy in _ARROW_SHAPES[name]]
                pen.polygon(points, fill=glyph)
            else:
                # Centre by the glyph's ink box (anchors only work with FreeType fonts).
                left, top, right, bottom = pen.textbbox((0, 0), name, font=self.font)
                origin = (centre[0] - (left + right) / 2.0, centre[1] - (top + bottom) / 2.0)
                pen.text(origin, name, fill=glyph, font=self.font)
        return cluster


def draw_hud(frame: np.ndarray, action: int) -> np.ndarray:
    """One-off overlay of ``action`` on ``frame``; use ``Hud`` to draw many frames of one size."""
    return Hud(frame.shape[1], frame.shape[0]).draw(frame, action)
