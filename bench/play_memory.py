"""Bounded memory of a live session: a native AR stream on the tiny model, 10 chunks vs 100.

    python bench/play_memory.py [--chunks 100] [--width 64] [--height 64] [--variant ar-distilled]

One process plays an open-ended AR stream (`worker.pipeline.stream.ARStream`, what the resident ranks
run for `worldplay play --engine native`) along a walk that turns, with a new prompt every 2 chunks (the
bounded text cache is full from chunk 7 on, so past it only the history grows), and
prints side by side after 10 chunks and after `--chunks`: the process RSS, the RSS once the C allocator
has returned its free pages (glibc `malloc_trim`: what the process holds rather than what the allocator
kept of earlier peaks, which varies from run to run), the live tensor bytes (every tensor storage the
garbage collector reaches: weights, caches, the stream's history) and the mean chunk time, then the
ratios. The issue's bound is ≤ 1.1× (tests/test_play_native.py asserts it on the tensor
bytes, which are deterministic; RSS also holds the allocator's and Python's own state).

What grows, by design: the denoised latents and the per-latent cameras (the memory may pick any of
them), C·chunk_latents·h·w·4 bytes per chunk (e.g. 0.8 MB per chunk at 480p on the released model).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

PROMPTS = ("a quiet street", "a snowy field", "a lantern-lit alley", "a beach at dusk", "a forest", "a harbour")


def walk(chunk: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk `chunk` of a walk forward that keeps turning right (latent 0 at the identity)."""
    latents = np.arange(chunk * count, (chunk + 1) * count)
    angles = 0.05 * latents
    c2w = np.repeat(np.eye(4)[None], count, 0)
    c2w[:, 0, 0] = c2w[:, 2, 2] = np.cos(angles)
    c2w[:, 0, 2], c2w[:, 2, 0] = np.sin(angles), -np.sin(angles)
    c2w[:, 0, 3], c2w[:, 2, 3] = np.sin(angles) * latents * 0.1, np.cos(angles) * latents * 0.1
    intrinsics = np.repeat(np.array([[[0.6, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]]), count, 0)
    actions = np.where(latents == 0, 0, 1 + 9)  # forward + turn right (any id; the model is random)
    return c2w, intrinsics, actions


def trimmed_rss(process: psutil.Process) -> int | None:
    """RSS after glibc hands its free pages back (None where there is no glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        return None
    return process.memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--variant", default="ar-distilled")
    args = parser.parse_args()

    from PIL import Image

    from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline
    from worker.pipeline.stream import ARStream, live_tensor_bytes
    from worker.pipeline.tiny_model import write_tiny_model

    process = psutil.Process()
    with tempfile.TemporaryDirectory() as work:
        root = write_tiny_model(Path(work) / "tiny")
        pipeline = WorldPlayPipeline.from_model_dir(root, args.variant, device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
    stream = ARStream(pipeline, image, GenerationOptions(width=args.width, height=args.height))
    marks = {}
    times: list[float] = []
    for chunk in range(args.chunks):
        started = time.perf_counter()
        stream.step(*walk(chunk, stream.chunk_latents), PROMPTS[chunk // 2 % len(PROMPTS)])
        times.append(time.perf_counter() - started)
        if chunk + 1 in (10, args.chunks):
            rss = process.memory_info().rss
            marks[chunk + 1] = (rss, trimmed_rss(process), live_tensor_bytes(), float(np.mean(times[-10:])))

    print(f"tiny {args.variant} stream, {args.width}x{args.height}, {args.chunks} chunks "
          f"({stream.chunk_latents} latents, {stream.steps} steps each)")  # fmt: skip
    print(f"{'after':>8} {'RSS MB':>10} {'trimmed MB':>12} {'tensors MB':>12} {'chunk ms (last 10)':>20}")
    for count, (rss, trimmed, tensors, seconds) in marks.items():
        held = f"{trimmed / 2**20:.1f}" if trimmed else "n/a"
        print(f"{count:>8} {rss / 2**20:>10.1f} {held:>12} {tensors / 2**20:>12.3f} {seconds * 1000:>20.1f}")
    first, last = marks[10], marks[args.chunks]
    ratios = [f"{b / a:.3f}" if a and b else "n/a" for a, b in zip(first, last)]
    print(f"{'ratio':>8} {ratios[0]:>10} {ratios[1]:>12} {ratios[2]:>12} {ratios[3]:>20}")
    tensors_10, tensors_n = first[2], last[2]
    grown = tensors_n - tensors_10
    print(f"tensor growth: {grown} bytes over {args.chunks - 10} chunks = {grown / (args.chunks - 10):.0f} per chunk "
          f"(latents {4 * np.prod(stream.chunk_shape)} + cameras)")  # fmt: skip


if __name__ == "__main__":
    main()
