"""Keeping a live session's chunk: what the chunk's critical path pays now vs a segment made before it counts.

    python bench/play_keep.py [--sizes 832x480,416x240] [--chunks 1,128,512] [--repeats 5]

A session keeps each chunk before publishing it (`worker.play.session`): its JPEG frames (already encoded
for the player) written as a directory renamed into place, then `timeline.json` rewritten. Until then a
chunk counted only once a thread had encoded its H.264 segment and rewritten `trajectory.json` and
`timeline.json`: a cancel's kill grace could end before that, losing chunks the player had seen. Both are
timed here on preview frames of the bundled image, side by side, for sessions of a few lengths (the
timeline and the path grow with the session; 512 four-latent chunks is `limits.max_latents`). Median
wall-clock milliseconds of this process; other load on the machine shows in the encode most.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trajectories import DEFAULT_K, Trajectory, resolve  # noqa: E402
from trajectories.render import preview_frames  # noqa: E402
from worker.play.session import keep_frames  # noqa: E402
from worker.video import write_video  # noqa: E402
from worldplay_cli.assets import EXAMPLE_IMAGE  # noqa: E402
from worldplay_cli.contract.play import SEGMENTS_DIR, PromptChange, Timeline, TimelineChunk, segment_name  # noqa: E402
from worldplay_cli.contract.queue import write_json_atomic, write_text_atomic  # noqa: E402

FRAMES_PER_CHUNK = 16


def chunk_frames(width: int, height: int) -> np.ndarray:
    image = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))
    trajectory = resolve("w-4, right-1")
    frames = list(preview_frames(image, trajectory, width, height, hud=False))
    return np.stack(frames[-FRAMES_PER_CHUNK:])


def jpegs_of(frames: np.ndarray) -> list[bytes]:
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
        encoded.append(buffer.getvalue())
    return encoded


def timeline_of(chunks: int) -> Timeline:
    records = [
        TimelineChunk(
            chunk=index,
            keys=[["w"]] * 4,
            actions=[1] * 4,
            prompt_index=0,
            first_frame=16 * index,
            num_frames=16,
            generate_s=0.1,
        )
        for index in range(chunks)
    ]
    return Timeline(chunk_latents=4, fps=24, prompts=[PromptChange(text="a street", from_chunk=0)], chunks=records)


def median_ms(step, repeats: int) -> float:
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="832x480,416x240")
    parser.add_argument("--chunks", default="1,128,512")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'size':>8} {'chunks':>6} | {'now: JPEGs + timeline':>22} | {'before: segment + path + timeline':>34} | ratio"
    )
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        frames = chunk_frames(width, height)
        jpegs = jpegs_of(frames)
        for chunks in (int(count) for count in args.chunks.split(",")):
            timeline = timeline_of(chunks)
            c2w = resolve(f"w-{4 * chunks - 1}").c2w
            directory = Path(tempfile.mkdtemp(prefix="play-keep-"))
            (directory / SEGMENTS_DIR).mkdir()
            try:

                def now(index: int) -> None:
                    keep_frames(directory, index, jpegs)
                    write_text_atomic(directory / "timeline.json", timeline.model_dump_json(indent=2))

                def before(index: int) -> None:
                    write_video(iter(frames), directory / SEGMENTS_DIR / segment_name(index), fps=24)
                    write_json_atomic(directory / "trajectory.json", Trajectory(c2w, DEFAULT_K).to_official_json())
                    write_json_atomic(directory / "timeline.json", timeline.model_dump(mode="json"))

                kept, encoded = median_ms(now, args.repeats), median_ms(before, args.repeats)
            finally:
                shutil.rmtree(directory)
            print(f"{size:>8} {chunks:>6} | {kept:>19.1f} ms | {encoded:>31.1f} ms | {encoded / kept:5.0f}x")
    print(f"(a chunk's {FRAMES_PER_CHUNK} JPEGs at quality 85: {sum(map(len, jpegs)) / 1e3:.0f} kB at the last size)")


if __name__ == "__main__":
    main()
