"""Native pipeline on the tiny model (CPU): where the time goes, and what streaming decode saves.

    python bench/pipeline_cpu.py [--variant ar-distilled] [--pose w-31] [--size 96x96] [--steps N]

1. Per-stage time of one generation (encode, AR context passes, denoising steps, decode), as seconds and
   as shares of the total, plus the time per denoising step and per chunk.
2. Streaming decode (each chunk decoded as it is produced) against the official end-of-video decode: peak
   memory the generation adds on top of the loaded model (each mode in a fresh process, peak RSS) and the
   time until the first frame reaches the writer, printed side by side with their ratio.

The weights are random and tiny, so the absolute numbers say nothing about the real model; the shares and
the memory ratio (which grows with the number of frames) are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_once(
    model_dir: str, variant: str, pose: str, width: int, height: int, steps: int | None, streaming: bool
) -> dict:
    """One generation in this process; returns timings and the peak memory it added."""
    import numpy as np
    from PIL import Image

    from trajectories import resolve
    from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline

    pipeline = WorldPlayPipeline.from_model_dir(model_dir, variant, device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    trajectory = resolve(pose)
    options = GenerationOptions(width=width, height=height, steps=steps, streaming_decode=streaming)
    # warm-up (lazy initialisation inside torch and the encoders), not measured
    pipeline.prepare("warm up", image, trajectory, options)
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    first_frame: list[float] = []

    def null_writer(frames, path, fps):
        for _ in frames:
            if not first_frame:
                first_frame.append(time.perf_counter() - started)

    result = pipeline.generate("a quiet street", image, trajectory, "unused.mp4", options, write_video=null_writer)
    total = time.perf_counter() - started
    steps_run = sum(1 for chunk in result.chunks) * result.steps
    return {
        "total_s": total,
        "first_frame_s": first_frame[0],
        "added_peak_bytes": max(0, peak_rss_bytes() - baseline),
        "stages": result.stages,
        "steps": steps_run,
        "chunks": len(result.chunks),
        "frames": result.num_frames,
    }


def in_subprocess(args: argparse.Namespace, model_dir: str, streaming: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--model-dir",
        model_dir,
        "--variant",
        args.variant,
        "--pose",
        args.pose,
        "--size",
        args.size,
        *(["--steps", str(args.steps)] if args.steps else []),
        *([] if streaming else ["--whole"]),
    ]
    # large blocks straight from mmap, so freed memory leaves the RSS and the peak reflects live tensors
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        sys.exit(completed.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="ar-distilled")
    parser.add_argument("--pose", default="w-31")
    parser.add_argument("--size", default="96x96", help="WIDTHxHEIGHT, multiples of 16")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--model-dir", default=None, help="an existing tiny model directory (default: a fresh one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(value) for value in args.size.lower().split("x"))

    if args.child:
        print(json.dumps(run_once(args.model_dir, args.variant, args.pose, width, height, args.steps, not args.whole)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if model_dir is None:
            sys.path.insert(0, str(ROOT))
            from worker.pipeline.tiny_model import write_tiny_model

            model_dir = str(write_tiny_model(Path(scratch) / "tiny"))
        streaming = in_subprocess(args, model_dir, streaming=True)
        whole = in_subprocess(args, model_dir, streaming=False)

    print(
        f"tiny model, {args.variant}, pose {args.pose!r}: {streaming['frames']} frames at {width}x{height}, "
        f"{streaming['chunks']} chunks, {streaming['steps']} denoising steps"
    )
    print("\n1. where the time goes (streaming run)")
    stages = streaming["stages"]
    measured = sum(stages.values())
    for name in ("encode", "context", "denoise", "decode"):
        seconds = stages.get(name, 0.0)
        print(f"   {name:<8} {seconds:8.3f} s   {seconds / measured:6.1%}")
    print(
        f"   per denoising step {stages['denoise'] / streaming['steps'] * 1000:8.1f} ms;"
        f" per chunk decode {stages['decode'] / streaming['chunks'] * 1000:8.1f} ms"
    )

    print("\n2. streaming decode vs end-of-video decode (official)")
    rows = [
        ("peak memory added", streaming["added_peak_bytes"] / 2**20, whole["added_peak_bytes"] / 2**20, "MiB"),
        ("time to first frame", streaming["first_frame_s"], whole["first_frame_s"], "s"),
        ("total time", streaming["total_s"], whole["total_s"], "s"),
    ]
    print(f"   {'':<20} {'streaming':>12} {'end-of-video':>14} {'ratio':>8}")
    for label, ours, baseline, unit in rows:
        ratio = ours / baseline if baseline else float("nan")
        print(f"   {label:<20} {ours:>9.2f} {unit:<3}{baseline:>11.2f} {unit:<3}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
