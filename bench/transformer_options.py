"""The transformer's optional paths side by side on this machine: `--compile` (torch.compile of the blocks)
against eager, and `--weights fp8` against full precision.

    python bench/transformer_options.py [--models tiny,mid-size] [--chunks 8] [--threads 1] [--backend inductor]

For the tiny model and a mid-size one (d 512, 8 blocks: bench/worker_warm.py's), an AR rollout as the
ar-distilled recipe runs it: per chunk a context pass over the previous latents (at most 20) and 4 denoising
steps of a 4-latent chunk, on a 8x12-latent frame. Prints
1. compile: the seconds spent compiling (torch's own count), chunk 0 eager and compiled (it pays them), the
   steady chunks (2 and later: every graph exists by then) eager and compiled and their ratio, and the largest
   difference between the compiled and eager outputs;
2. FP8: the blocks' bytes before and after, from fp32 and from bf16, and the relative L2 error of a chunk's
   output against the fp32 model, beside the error of the bf16 model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from worker.models.fp8 import quantize_blocks
from worker.models.tiny import TINY_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer
from worker.runtime.render import compile_totals

MODELS = {
    "tiny": TINY_TRANSFORMER_CONFIG,
    "mid-size": replace(
        TINY_TRANSFORMER_CONFIG, hidden_size=512, num_heads=8, num_layers=8, rope_axes_dims=(16, 24, 24),
        byt5_hidden_size=512,
    ),
}  # fmt: skip
HEIGHT, WIDTH = 8, 12
CHUNK, CONTEXT, STEPS = 4, 20, 4
STEADY_FROM = 2


def inputs(config, latents: int):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2 * config.in_channels + 1, latents, HEIGHT, WIDTH, generator=generator)
    viewmats = torch.eye(4).repeat(1, latents, 1, 1)
    viewmats[..., 2, 3] = -0.08 * torch.arange(latents)
    intrinsics = torch.tensor([[0.505, 0, 0.5], [0, 0.898, 0.5], [0, 0, 1.0]]).repeat(1, latents, 1, 1)
    action = torch.full((1, latents), 9)
    prompt = PromptEmbeddings(
        llm=torch.randn(1, 32, config.text_states_dim, generator=generator),
        llm_mask=torch.ones(1, 32),
        byt5=torch.randn(1, 8, config.byt5_states_dim, generator=generator),
        byt5_mask=torch.zeros(1, 8),
        vision=torch.randn(1, 16, config.vision_states_dim, generator=generator),
    )
    return (x, viewmats, intrinsics, action), prompt


def pick(frames_inputs, frames: slice, dtype):
    x, viewmats, intrinsics, action = frames_inputs
    return x[:, :, frames].to(dtype), viewmats[:, frames], intrinsics[:, frames], action[:, frames]


@torch.no_grad()
def rollout(model: WorldPlayTransformer, chunks: int) -> tuple[list[float], torch.Tensor]:
    """Seconds of every chunk (context pass + steps) and the last chunk's output."""
    frames_inputs, prompt = inputs(model.config, chunks * CHUNK)
    dtype = model.dtype
    text = model.forward_text(prompt)
    seconds = []
    for index in range(chunks):
        started = time.perf_counter()
        start = index * CHUNK
        cache = text
        if index:
            context = slice(max(0, start - CONTEXT), start)
            cache = model.forward_context(*pick(frames_inputs, context, dtype), text)
        chunk_x, *chunk_cameras = pick(frames_inputs, slice(start, start + CHUNK), dtype)
        for step in range(STEPS):
            out = model.forward_chunk(chunk_x, 1000.0 - 250 * step, *chunk_cameras, cache)
        seconds.append(time.perf_counter() - started)
    return seconds, out.float()


def build(config, dtype=torch.float32) -> WorldPlayTransformer:
    torch.manual_seed(0)
    return WorldPlayTransformer(config).to(dtype).eval()


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).norm() / reference.norm()).item()


def compile_rows(name: str, config, chunks: int, backend: str) -> None:
    eager_s, eager_out = rollout(build(config), chunks)
    model = build(config)
    model.compile_blocks(backend)
    before = compile_totals()
    compiled_s, compiled_out = rollout(model, chunks)
    compiling, graphs = (after - start for after, start in zip(compile_totals(), before))
    eager_steady = statistics.median(eager_s[STEADY_FROM:])
    compiled_steady = statistics.median(compiled_s[STEADY_FROM:])
    print(
        f"| {name} | {compiling:.1f} s ({graphs} graphs) | {eager_s[0]:.3f} s | {compiled_s[0]:.1f} s "
        f"| {eager_steady:.3f} s | {compiled_steady:.3f} s | **{compiled_steady / eager_steady:.2f}** "
        f"| {(compiled_out - eager_out).abs().max().item():.1e} |",
        flush=True,
    )


def fp8_rows(name: str, config) -> None:
    _, reference = rollout(build(config), 1)
    _, bf16_out = rollout(build(config, torch.bfloat16), 1)
    cells = []
    for dtype in (torch.float32, torch.bfloat16):
        model = build(config, dtype)
        report = quantize_blocks(model)
        _, out = rollout(model, 1)
        cells.append(f"{report['bytes_after'] / report['bytes_before']:.3f}")
        cells.append(f"{relative_error(out, reference):.2%}")
    print(f"| {name} | {' | '.join(cells)} | {relative_error(bf16_out, reference):.2%} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,mid-size")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.chunks} chunks of {STEPS} steps\n")
    print(f"compile ({args.backend}) vs eager: steady = median of chunks {STEADY_FROM}..{args.chunks - 1}")
    print(
        "| model | compiling | chunk 0 eager | chunk 0 compiled | steady eager | steady compiled | ratio | max diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        compile_rows(name, MODELS[name], args.chunks, args.backend)
    print("\nFP8 block weights: bytes after / before, relative L2 error of a chunk's output vs the fp32 model")
    print("| model | from fp32: bytes | error | from bf16: bytes | error | bf16 alone: error |")
    print("|---|---|---|---|---|---|")
    for name in names:
        fp8_rows(name, MODELS[name])


if __name__ == "__main__":
    main()
