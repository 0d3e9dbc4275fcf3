"""Key press -> new frame in `worldplay traj edit`, on a 512-latent path vs a 16-latent one.

The editor runs headless (Textual's `run_test`, the same code path as in a terminal, minus the bytes
written to it) with a reference image, so every key press also schedules a live-preview render. One
sample is the time from posting the key to the moment Textual hands the next rendered frame to the
display: the key dispatch, the state change, recomputing every panel, Textual's refresh scheduling and
rendering the changed lines. The issue's target is under 50 ms at 512 latents. `handler` is the CPU time of
the editor's synchronous share of it (state change + recomputing every panel), without the event loop;
wall-clock latencies grow with machine load, the handler's CPU time much less so.

    python bench/editor.py [--samples 30] [--size 160x48]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from trajectories import parse_pose_string  # noqa: E402
from worldplay_cli.tui.editor.app import EditorApp  # noqa: E402
from worldplay_cli.tui.editor.document import document_from_trajectory  # noqa: E402
from worldplay_cli.tui.editor.state import EditorState  # noqa: E402

LONG = "w-100, w+right-100, d+up-100, left-100, s-111"  # 512 latents
SHORT = "w-3, w+right-8, d-4"  # 16 latents


def _end(state: EditorState, samples: int) -> None:
    state.goto(state.num_latents - 1)


def _middle(state: EditorState, samples: int) -> None:
    state.goto(state.num_latents // 2)


def _history(state: EditorState, samples: int) -> None:
    for _ in range(samples):
        state.action("w")


# (label, set-up of the state before sampling, key sampled)
CASES = [
    ("append w at the end", _end, "w"),
    ("insert w in the middle", _middle, "w"),
    ("cursor step (,)", _end, "comma"),
    ("undo", _history, "u"),
]


async def sample(pose: str, setup, key: str, samples: int, size: tuple[int, int], reference) -> tuple[float, float]:
    document = document_from_trajectory(parse_pose_string(pose))
    app = EditorApp(EditorState(document), reference=reference)
    frames: list[float] = []
    display = app._display  # Textual's hand-off of a rendered frame to the terminal

    def timed_display(screen, renderable) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
        display(screen, renderable)

    app._display = timed_display
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        setup(app.state, samples)
        screen.sync()
        await pilot.pause()
        latencies, handler = [], []
        for _ in range(samples):
            await pilot.pause()
            start = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            after = [moment for moment in frames if moment > start]
            if after:
                latencies.append(after[0] - start)
        # The synchronous part alone: the state change and recomputing every panel, no event loop.
        for _ in range(samples):
            start = time.thread_time()  # CPU time: stays meaningful on a busy machine
            screen.action_move("w")
            handler.append(time.thread_time() - start)
        await pilot.pause()
    return statistics.median(latencies) * 1e3, statistics.median(handler) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--size", default="160x48")
    args = parser.parse_args()
    size = tuple(int(value) for value in args.size.split("x"))
    reference = np.asarray(Image.open(ROOT / "worldplay_cli" / "assets" / "example.png").convert("RGB"))
    print(
        f"median ms from key press to new frame, terminal {size[0]}x{size[1]}, {args.samples} samples, live preview on"
    )
    print(f"{'':32}{'16 latents':>12}{'512 latents':>13}{'ratio':>8}{'handler CPU 512':>17}")
    for label, keys, key in CASES:
        short, _ = asyncio.run(sample(SHORT, keys, key, args.samples, size, reference))
        long, handler = asyncio.run(sample(LONG, keys, key, args.samples, size, reference))
        print(f"{label:32}{short:12.1f}{long:13.1f}{long / short:8.2f}{handler:17.2f}")


if __name__ == "__main__":
    main()
