"""`worldplay bench`: time the real native pipeline stage by stage on this machine (see worldplay_cli.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.contract import variants
from worldplay_cli.options import (
    AttentionBackendOption,
    CompileOption,
    ConfigOption,
    JsonOption,
    OutputRootOption,
    RedisUrlOption,
    WeightsOption,
)

HELP = """Time the native pipeline stage by stage: load, encode, per chunk the context pass, the denoising steps and the decode; seconds per chunk and frames per second once the memory context is full; peak memory per stage; and the share of the device's dense BF16 peak the steady chunks reach (analytic FLOP count, see docs/performance.md). [bold]--tiny[/] benches a tiny random model (any machine, CI). [bold]--compile[/] runs it eager, then compiled, side by side."""


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench)


def bench(
    variant: Annotated[
        Optional[str], typer.Option(help=f"{' | '.join(variants.names())} (default from settings).", show_default=False)
    ] = None,
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", help="Memory profile: auto | resident | offload | group-offload | low-vram."),
    ] = None,
    gpus: Annotated[int, typer.Option(help="GPUs (sequence parallel).")] = 1,
    model_dir: Annotated[
        Optional[Path], typer.Option(help="Model directory (default: the model_dir setting).", show_default=False)
    ] = None,
    chunks: Annotated[int, typer.Option(help="Chunks to generate (the first 5 fill the memory context).")] = 8,
    tiny: Annotated[bool, typer.Option("--tiny", help="Bench a tiny random model (written to a temp dir).")] = False,
    width: Annotated[
        Optional[int], typer.Option(help="Frame width (default: 480p bucket).", show_default=False)
    ] = None,
    height: Annotated[Optional[int], typer.Option(help="Frame height.", show_default=False)] = None,
    peak_tflops: Annotated[
        Optional[float],
        typer.Option(help="The device's dense BF16 peak, when the bench does not know the device.", show_default=False),
    ] = None,
    compile: CompileOption = False,
    weights: WeightsOption = "default",
    attention_backend: AttentionBackendOption = "auto",
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    from worldplay_cli.bench import BenchRequest, CompileComparison, run_bench
    from worldplay_cli.output import emit
    from worldplay_cli.runtime import Runtime

    runtime = Runtime(config, redis_url, output_root)
    request = BenchRequest(
        variant, profile, gpus, model_dir, chunks, tiny, width, height, peak_tflops, compile, weights, attention_backend
    )
    report = run_bench(runtime, request, show=not as_json)
    printer = _print_comparison if isinstance(report, CompileComparison) else _print
    emit(report.as_json(), as_json, lambda console: printer(console, report))


def _print_comparison(console, comparison) -> None:
    from rich.table import Table

    from worldplay_cli.bench import chunk_seconds

    eager, compiled = comparison.eager, comparison.compiled
    for report in (eager, compiled):
        _print(console, report)
        console.print()
    table = Table("", "eager", f"compiled ({compiled.compile})", "compiled / eager", box=None)
    table.add_row("compiling", "", f"{compiled.compile_s or 0:.2f} s", "")
    first = (chunk_seconds(eager.chunks[0]), chunk_seconds(compiled.chunks[0]))
    table.add_row("chunk 0", f"{first[0]:.3f} s", f"{first[1]:.3f} s", f"{comparison.first_chunk_ratio:.2f}")
    table.add_row(
        "steady s/chunk",
        f"{eager.seconds_per_chunk:.3f} s",
        f"{compiled.seconds_per_chunk:.3f} s",
        f"[bold]{comparison.steady_ratio:.2f}[/]",
    )
    console.print(table)


def _print(console, report) -> None:
    from rich.table import Table

    guidance = "no CFG" if report.guidance <= 1 else f"CFG {report.guidance:g}"
    console.print(
        f"[bold]{report.variant}[/] on {report.device_name or report.device}, {report.gpus} rank(s), "
        f"profile {report.profile or '-'}, {report.width}x{report.height}, {len(report.chunks)} chunks "
        f"({report.steps} steps, {guidance}); attention {report.attention or '-'}, weights {report.weights}, "
        f"compile {report.compile or 'off'}; job {report.job_id}",
        highlight=False,
    )
    table = Table("stage", "seconds", "context", "denoise", "decode", "latents in context", "peak memory", box=None)
    memory = report.peak_memory_bytes
    table.add_row("load", f"{report.load_s:.2f}", "", "", "", "", _bytes(memory.get("load")))
    table.add_row("encode", f"{report.encode_s:.2f}", "", "", "", "", _bytes(memory.get("encode")))
    for chunk in report.chunks:
        seconds = chunk["context_s"] + chunk["denoise_s"] + chunk["decode_s"]
        parts = (f"{chunk[name]:.3f}" for name in ("context_s", "denoise_s", "decode_s"))
        table.add_row(f"chunk {chunk['index']}", f"{seconds:.3f}", *parts, str(len(chunk["context"])), "")
    for stage, seconds in report.stages_s.items():
        if stage.startswith("sr"):
            table.add_row(stage, f"{seconds:.2f}", "", "", "", "", _bytes(memory.get(stage)))
    table.add_row("generate (peak)", "", "", "", "", "", _bytes(memory.get("generate")))
    console.print(table)
    steady = ", ".join(str(index) for index in report.steady_chunks)
    console.print(
        f"steady (chunks {steady}): [bold]{report.seconds_per_chunk:.3f} s/chunk[/], "
        f"{report.frames_per_second:.1f} frames/s",
        highlight=False,
    )
    if report.tflop_per_chunk is not None:
        line = f"{report.tflop_per_chunk:.4g} TFLOP/chunk, {report.achieved_tflops:.4g} TFLOP/s achieved"
        if report.peak_fraction is not None:
            line += f" = {100 * report.peak_fraction:.1f}% of {report.peak_tflops:g} TFLOP/s (dense BF16 peak)"
        else:
            line += " (device peak unknown: give --peak-tflops)"
        console.print(line, highlight=False)


def _bytes(value: int | None) -> str:
    return "" if not value else f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
