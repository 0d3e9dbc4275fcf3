"""Messages the editor's widgets and workers post (dataclasses, so they print and compare well)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from textual.message import Message


@dataclass
class LatentClicked(Message):
    """A click on the map, side view or timeline landed on `latent`."""

    latent: int


@dataclass
class PreviewRendered(Message):
    """The preview worker finished the view from `latent` (HxWx3 uint8)."""

    latent: int
    image: np.ndarray


@dataclass
class SubmitFinished(Message):
    """The submit worker enqueued a job (`job_id`, `queue`) or failed with `error`; `warning`: no live
    worker serves the queue (with the command that starts one)."""

    job_id: str | None
    queue: str | None = None
    error: str | None = None
    warning: str | None = None
