"""Memory selection per chunk along long walks: this tree's `worker.pipeline.memory` next to an earlier revision's.

    python bench/memory_selection.py [--baseline f450d99] [--chunks 16,64,256] [--threads 1] [--repeats 3]

Two walks of 4 * max(chunks) + 4 latents with the trajectory grammar's default steps:
- `explore`: forward, turning a little every few latents (a player crossing a world): old cameras fall out
  of reach, so the pruned selection stays flat while the unpruned one grows with the video;
- `orbit`: circling a small square forever (every earlier camera stays within reach): the worst case,
  where only the smaller point set helps.
For each walk and chunk it prints the median selection time of both revisions, the ratio, the
time at each chunk over the time at the first listed chunk, and whether the selections are identical
(they must be). The baseline module is read from git (`git show REV:worker/pipeline/memory.py`), so both
run in one process on the same inputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trajectories.poses import motions_to_c2w
from worker.pipeline import memory

ROOT = Path(__file__).resolve().parents[1]
STEP, TURN = 0.08, np.radians(3.0)


def walk(kind: str, num_latents: int) -> np.ndarray:
    """World-to-camera matrices [num_latents, 4, 4]."""
    motions = []
    for latent in range(num_latents - 1):
        if kind == "explore":
            # a turn every 8 latents, alternately left and right: it wanders, but keeps going
            turn = {"yaw": TURN if latent % 16 == 7 else -TURN} if latent % 8 == 7 else {}
            motions.append({"forward": STEP, **turn})
        else:  # a square of side 8 steps: four straight runs, four quarter turns
            motions.append({"forward": STEP} if latent % 38 < 8 else {"yaw": TURN})
    return np.linalg.inv(motions_to_c2w(motions))


def baseline_module(revision: str):
    source = subprocess.run(
        ["git", "show", f"{revision}:worker/pipeline/memory.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "memory_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("memory_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(module, w2c: np.ndarray, start: int, points: torch.Tensor, repeats: int) -> tuple[float, list[int]]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        selected = module.select_context_latents(w2c, start, 4, points=points)
        times.append(time.perf_counter() - began)
    return statistics.median(times), selected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="f450d99", help="git revision of the unpruned selection")
    parser.add_argument("--chunks", default="16,64,256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunks = [int(chunk) for chunk in args.chunks.split(",")]
    baseline = baseline_module(args.baseline)
    points = memory.sample_points_in_sphere()
    print(f"memory selection per chunk, {args.threads} thread(s), median of {args.repeats}; baseline {args.baseline}")
    print(f"{'walk':8} {'chunk':>5} {'baseline ms':>12} {'now ms':>8} {'now/base':>9} {'now/first':>10} {'same':>5}")
    identical = True
    for kind in ("explore", "orbit"):
        w2c = walk(kind, 4 * max(chunks) + 4)
        first = None
        for chunk in chunks:
            before_s, before = timed(baseline, w2c, 4 * chunk, points, args.repeats)
            now_s, now = timed(memory, w2c, 4 * chunk, points, args.repeats)
            first = first or now_s
            identical &= before == now
            print(
                f"{kind:8} {chunk:5d} {before_s * 1e3:12.1f} {now_s * 1e3:8.1f} {now_s / before_s:9.3f} "
                f"{now_s / first:10.2f} {'yes' if before == now else 'NO':>5}"
            )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
