"""Helpers for live-session tests: a session on the queue, the player's side of its channel, frame motion."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from worldplay_cli.contract.play import Chunk, Ended, Failed, Keys, PlayChannel, Ready

# Small frames keep a preview chunk to a few tens of milliseconds.
WIDTH, HEIGHT = 96, 48


def dot_image(path: Path, x: float = 0.7, y: float = 0.3) -> Path:
    """A black image with one white square at (x, y) (fractions of the size), above the horizon so it sits
    on the preview's backdrop: walking forward pushes it outward, turning right moves it left."""
    image = np.zeros((HEIGHT * 2, WIDTH * 2, 3), np.uint8)
    cx, cy = int(x * WIDTH * 2), int(y * HEIGHT * 2)
    image[cy - 3 : cy + 3, cx - 3 : cx + 3] = 255
    Image.fromarray(image).save(path)
    return path


def dot_position(jpeg: bytes) -> tuple[float, float]:
    """Centroid (x, y) of the bright pixels of a frame."""
    frame = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64)
    ys, xs = np.nonzero(frame > 128)
    assert len(xs), "no bright pixels in the frame"
    return float(xs.mean()), float(ys.mean())


@dataclass
class Player:
    """The player's side of a session: what it sent and everything the worker published."""

    channel: PlayChannel
    received: list = field(default_factory=list)  # (message, frames)

    def keys(self, chunk: int, *latents: str, chunk_latents: int = 4) -> None:
        """Keys for `chunk`: each latent a '+'-joined key string ('' = nothing held); the last repeats."""
        held = [[key for key in latent.split("+") if key] for latent in latents]
        held += [held[-1]] * (chunk_latents - len(held))
        self.channel.send(Keys(chunk=chunk, latents=held))

    def wait_for(self, kind, timeout: float = 30.0, count: int = 1):
        """The first `count` messages of `kind` (Ready, Chunk, Ended, Failed), reading as long as needed."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(message, frames) for message, frames in self.received if isinstance(message, kind)]
            if len(found) >= count:
                return found[:count]
            ended = [message for message, _ in self.received if isinstance(message, (Ended, Failed))]
            if ended and kind not in (Ended, Failed):
                raise AssertionError(f"session ended while waiting for {kind.__name__}: {ended[0]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {count} {kind.__name__}")
            self.received += self.channel.outputs(block_s=0.2)

    def chunks(self) -> list[tuple[Chunk, list[bytes]]]:
        return [(message, frames) for message, frames in self.received if isinstance(message, Chunk)]

    def ready(self, timeout: float = 30.0) -> Ready:
        return self.wait_for(Ready, timeout)[0][0]


def start_session(settings, conn, image: Path, **request) -> tuple[str, Player]:
    """A preview session on the play queue (`submit_play`), and its player (not waiting for `Ready`)."""
    from worldplay_cli.submit import PlayRequest, submit_play

    request = {"prompt": "a quiet street", "width": WIDTH, "height": HEIGHT, "image": image, **request}
    submitted = submit_play(PlayRequest(**request), settings, conn, check_served=False)
    return submitted.job_id, Player(PlayChannel(conn, submitted.job_id))
