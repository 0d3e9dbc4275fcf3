"""CPU benchmark of the native transformer on a small config: forward time and peak memory, bi vs AR.

    python bench/transformer_cpu.py [--steps 2] [--chunks 16] [--threads 1]

Prints
1. bidirectional forwards over 4/8/16/20 latent frames;
2. one AR denoising step of a 4-latent chunk with 0/8/16 cached context frames, next to a bidirectional
   forward over the same context + chunk frames (what the KV cache saves per step);
3. a 16-chunk AR rollout with the reconstituted memory: model time per chunk (context pass + steps) must
   level off once the context reaches its 20-latent cap, instead of growing with the video. The memory
   selection's own time is listed apart and in the total: it tests only the cameras within reach of what
   the chunk's cameras see, so on a walk that moves on it stays flat too (`--chunks 65` shows chunk 64
   against chunk 8; bench/memory_selection.py compares it with the unpruned selection).
Peak memory: each measurement of 1-2 runs in a fresh process whose malloc returns large blocks to the OS
at once (fixed mmap threshold), and reports the peak RSS during one call (VmHWM, reset just before it
through /proc/self/clear_refs) above the RSS before the call: the call's working memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from worker.models.tiny import TINY_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer
from worker.pipeline.memory import select_context_latents

# The tiny model made wide and deep enough that attention and matmuls, not per-op overhead, set the times.
CONFIG = replace(
    TINY_TRANSFORMER_CONFIG,
    in_channels=16,
    out_channels=16,
    hidden_size=256,
    num_layers=4,
    rope_axes_dims=(16, 56, 56),
    text_states_dim=64,
    vision_states_dim=64,
    byt5_states_dim=64,
)
HEIGHT, WIDTH = 8, 12
TIMESTEP = 900.0


def inputs(frames: int):
    generator = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 2 * CONFIG.in_channels + 1, frames, HEIGHT, WIDTH, generator=generator)
    viewmats = torch.eye(4).repeat(1, frames, 1, 1)
    viewmats[..., 2, 3] = -0.08 * torch.arange(frames)
    intrinsics = torch.tensor([[0.505, 0, 0.5], [0, 0.898, 0.5], [0, 0, 1.0]]).repeat(1, frames, 1, 1)
    action = torch.full((1, frames), 9)
    return x, viewmats, intrinsics, action


def pick(frames_inputs, frames):
    """(x, viewmats, intrinsics, action) restricted to some latent frames (a slice or an index tensor)."""
    x, viewmats, intrinsics, action = frames_inputs
    return x[:, :, frames], viewmats[:, frames], intrinsics[:, frames], action[:, frames]


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def prompt() -> PromptEmbeddings:
    generator = torch.Generator().manual_seed(0)
    return PromptEmbeddings(
        llm=torch.randn(1, 32, 64, generator=generator),
        llm_mask=torch.ones(1, 32),
        byt5=torch.randn(1, 8, 64, generator=generator),
        byt5_mask=torch.zeros(1, 8),
        vision=torch.randn(1, 16, 64, generator=generator),
    )


def build_model() -> WorldPlayTransformer:
    torch.manual_seed(0)
    return WorldPlayTransformer(CONFIG).eval()


# Without a fixed threshold glibc keeps freed tensors' memory for reuse, hiding later calls' peaks.
CHILD_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def memory_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def working_memory_mb(call) -> float:
    """Peak RSS during `call()` above the RSS before it (Linux)."""
    before = memory_status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    call()
    return memory_status_mb("VmHWM") - before


@torch.inference_mode()
def measure_in_this_process(kind: str, frames: int, context_frames: int, repeats: int) -> dict:
    """Runs in a child process: peak RSS growth of the first call, then the best time of `repeats` calls."""
    model = build_model()
    embeddings = prompt()
    video = inputs(frames)
    if kind == "bi":

        def call():
            return model.forward_bi(video[0], TIMESTEP, embeddings, *video[1:])
    else:
        cache = model.forward_text(embeddings)
        if context_frames:
            cache = model.forward_context(*pick(video, slice(0, context_frames)), cache)
        chunk = pick(video, slice(context_frames, frames))

        def call():
            return model.forward_chunk(chunk[0], TIMESTEP, *chunk[1:], cache)

    peak = working_memory_mb(call)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return {"seconds": best, "peak_mb": peak}


def measure(kind: str, frames: int, context_frames: int, threads: int, repeats: int = 3) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(frames), str(context_frames)]
    command += ["--threads", str(threads), "--repeats", str(repeats)]
    environment = {**os.environ, **CHILD_ENVIRONMENT}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(result.stdout)


@torch.inference_mode()
def rollout(chunks: int, steps: int) -> None:
    model = build_model()
    text_cache = model.forward_text(prompt())
    video = inputs(4 * chunks)
    w2c = video[1][0].double().numpy()
    print(
        f"{'chunk':>6} {'context':>8} {'model ms':>9} {'vs chunk 5':>11} {'selection ms':>13} {'total ms':>9} "
        f"{'total vs chunk 8':>17}"
    )
    reference = total_reference = None
    for chunk_index in range(chunks):
        start = 4 * chunk_index
        started = time.perf_counter()
        selected = select_context_latents(w2c, start, 4)
        selection_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cache = text_cache
        if selected:
            cache = model.forward_context(*pick(video, torch.tensor(selected)), text_cache)
        chunk = pick(video, slice(start, start + 4))
        for _ in range(steps):
            model.forward_chunk(chunk[0], TIMESTEP, *chunk[1:], cache)
        seconds = time.perf_counter() - started
        total = seconds + selection_seconds
        reference = seconds if chunk_index == 5 else reference
        total_reference = total if chunk_index == 8 else total_reference
        versus = ratio(seconds, reference) if reference else ""
        total_versus = ratio(total, total_reference) if total_reference else ""
        milliseconds, selection_milliseconds = seconds * 1e3, selection_seconds * 1e3
        print(
            f"{chunk_index:>6} {len(selected):>8} {milliseconds:>9.1f} {versus:>11} {selection_milliseconds:>13.1f} "
            f"{total * 1e3:>9.1f} {total_versus:>17}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per chunk in the rollout")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier figures)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FRAMES", "CONTEXT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        kind, frames, context_frames = args.child
        print(json.dumps(measure_in_this_process(kind, int(frames), int(context_frames), args.repeats)))
        return

    print(
        f"config: hidden {CONFIG.hidden_size}, {CONFIG.num_layers} blocks, {HEIGHT}x{WIDTH} tokens/frame, "
        f"backend {build_model().attention_backend_in_use()}, {args.threads} thread(s)"
    )
    print("\n1. bidirectional forward")
    print(f"{'frames':>7} {'time ms':>9} {'peak MB':>8} {'time vs 4':>10} {'peak vs 4':>10}")
    bi = {frames: measure("bi", frames, 0, args.threads, args.repeats) for frames in (4, 8, 12, 16, 20)}
    for frames, result in bi.items():
        time_ratio = ratio(result["seconds"], bi[4]["seconds"])
        peak_ratio = ratio(result["peak_mb"], bi[4]["peak_mb"])
        milliseconds = result["seconds"] * 1e3
        print(f"{frames:>7} {milliseconds:>9.1f} {result['peak_mb']:>8.1f} {time_ratio:>10} {peak_ratio:>10}")

    print("\n2. AR step for a 4-latent chunk vs a bi forward over context + chunk")
    print(f"{'context':>7} {'AR ms':>7} {'AR MB':>6} {'bi ms':>7} {'bi MB':>6} {'time AR/bi':>11} {'peak AR/bi':>11}")
    for context_frames in (0, 8, 16):
        ar = measure("ar", context_frames + 4, context_frames, args.threads, args.repeats)
        full = bi[context_frames + 4]
        time_ratio, peak_ratio = ratio(ar["seconds"], full["seconds"]), ratio(ar["peak_mb"], full["peak_mb"])
        print(
            f"{context_frames:>7} {ar['seconds'] * 1e3:>7.1f} {ar['peak_mb']:>6.1f} {full['seconds'] * 1e3:>7.1f} "
            f"{full['peak_mb']:>6.1f} {time_ratio:>11} {peak_ratio:>11}"
        )

    print(f"\n3. AR rollout: {args.chunks} chunks x (context pass + {args.steps} steps), memory-selected context")
    rollout(args.chunks, args.steps)
    print("\nfrom chunk 5 on the context holds the full 20 latents: a flat 'vs chunk 5' column means bounded cost")


if __name__ == "__main__":
    main()
