"""`worldplay bench`: the real native pipeline timed stage by stage, and how close it runs to the device.

The bench is a real job: a native generation of `chunks` chunks along a straight walk, run in the
foreground by a private worker exactly as `worldplay generate` runs it (resident rank group, memory
profile, sequence parallel over `gpus`), so what it times is what users get. Its manifest holds the
figures: load, encode, per chunk the context pass, the denoising steps and the decode, the peak memory of
each stage, and the analytic FLOP count of each chunk (`worker.models.flops`). From them the report gives
seconds per chunk and frames per second in the steady state (chunks from `STEADY_FROM` on, when the
memory context is full, as the reference's methodology asks), and the fraction of the device's dense BF16
peak that the steady chunks reach.

`--tiny` writes a tiny random model of the variant's family first (`worldplay dev tiny-model --family`), so
the bench runs anywhere (CI runs it): its figures say how the code path behaves, not how fast a real model is.

`--weights fp8` and `--attention-backend` bench the transformer as the job options of those names run it.
`--compile` runs the job twice, eager then with the transformer's blocks compiled (`torch.compile`), and
puts them side by side: the seconds spent compiling, the first chunk (which pays them) and the steady chunks.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput, WorldplayError

if TYPE_CHECKING:
    from worldplay_cli.runtime import Runtime

# Chunks before this one fill the memory context (20 latents = 5 AR chunks) and are reported apart.
STEADY_FROM = 5

# Dense BF16 tensor-core peaks in TFLOP/s, by a part of the name torch reports (first match wins).
DEVICE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
)

TINY_SIZE = (64, 112)  # height, width: the tiny model's bench frames (small, so a CPU runs it in seconds)


def tiny_size(family: variants.Family) -> tuple[int, int]:
    """`TINY_SIZE` rounded up to the sides the family can generate."""
    multiple = family.size_multiple
    return tuple(-(-side // multiple) * multiple for side in TINY_SIZE)


@dataclass(frozen=True)
class BenchRequest:
    variant: str | None = None
    profile: str | None = None
    gpus: int = 1
    model_dir: Path | None = None
    chunks: int = 8
    tiny: bool = False
    width: int | None = None
    height: int | None = None
    peak_tflops: float | None = None  # the device's peak when the bench does not know it
    compile: bool = False  # eager and compiled, side by side
    weights: str = "default"
    attention_backend: str = "auto"


@dataclass
class BenchReport:
    job_id: str
    variant: str
    device: str
    device_name: str
    gpus: int
    profile: str
    width: int
    height: int
    frames: int
    chunk_frames: int
    steps: int
    guidance: float
    load_s: float
    encode_s: float
    text_s: float
    chunks: list[dict]
    steady_chunks: list[int]
    seconds_per_chunk: float
    frames_per_second: float
    tflop_per_chunk: float | None
    achieved_tflops: float | None
    peak_tflops: float | None
    peak_fraction: float | None
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)
    attention: str = ""
    weights: str = "default"
    compile: str | None = None  # the torch.compile backend, None: eager
    compile_s: float | None = None  # spent compiling in this job

    def as_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class CompileComparison:
    """`--compile`: the same bench eager and compiled, in one run."""

    eager: BenchReport
    compiled: BenchReport

    @property
    def steady_ratio(self) -> float:
        """Compiled steady seconds per chunk over eager's (below 1: compiled is faster)."""
        return self.compiled.seconds_per_chunk / self.eager.seconds_per_chunk

    @property
    def first_chunk_ratio(self) -> float:
        return chunk_seconds(self.compiled.chunks[0]) / chunk_seconds(self.eager.chunks[0])

    def as_json(self) -> dict:
        return {
            "eager": self.eager.as_json(),
            "compiled": self.compiled.as_json(),
            "compile_s": self.compiled.compile_s,
            "steady_ratio": self.steady_ratio,
            "first_chunk_ratio": self.first_chunk_ratio,
        }


def chunk_seconds(chunk: dict) -> float:
    """A chunk's time: its context pass, denoising steps and decode."""
    return chunk["context_s"] + chunk["denoise_s"] + chunk["decode_s"]


def device_peak_tflops(device_name: str) -> float | None:
    for part, peak in DEVICE_PEAK_TFLOPS:
        if part.lower() in device_name.lower():
            return peak
    return None


def run_bench(runtime: Runtime, request: BenchRequest, show: bool = False) -> BenchReport | CompileComparison:
    """Run the bench job in the foreground (with `compile`: eager, then compiled) and read its figures back
    from the manifest."""
    from worldplay_cli.follow import run_foreground
    from worldplay_cli.submit import GenerateRequest, check_output_root, prepare
    from worldplay_cli.tiny import write_tiny_model

    name = request.variant or runtime.settings.default_variant
    variant = variants.find(name)
    if variant is None:
        raise BadInput(f"unknown variant {name!r}", f"use one of: {', '.join(variants.names())}")
    if request.chunks < 1:
        raise BadInput(f"--chunks {request.chunks} is not a positive number", "e.g. --chunks 8")
    latents = request.chunks * variant.chunk_latents
    check_output_root(runtime.settings)
    with tempfile.TemporaryDirectory(prefix="worldplay-bench-") as scratch:
        model_dir = request.model_dir
        height, width = request.height, request.width
        if request.tiny:
            model_dir = write_tiny_model(
                Path(scratch) / "tiny-model", seed=0, hub_names=False, family=variant.family_name
            )
            tiny_height, tiny_width = tiny_size(variant.family)
            height, width = height or tiny_height, width or tiny_width
        reports = []
        for compiled in (False, True) if request.compile else (False,):
            prepared = prepare(
                GenerateRequest(
                    prompt="a quiet street at dusk, walking forward",
                    pose=f"w-{latents - 1}",
                    engine="native",
                    variant=variant.name,
                    gpus=request.gpus,
                    width=width,
                    height=height,
                    memory_profile=request.profile,
                    model_dir=model_dir,
                    output_name="bench-compiled" if compiled else "bench",
                    compile=compiled,
                    weights=request.weights,
                    attention_backend=request.attention_backend,
                ),
                runtime.settings,
            )
            outcome = run_foreground(runtime, prepared, show=show)
            manifest = json.loads((Path(outcome.result["output_dir"]) / "manifest.json").read_text())
            reports.append(report_from_manifest(outcome.job_id, manifest, request.peak_tflops))
    return CompileComparison(*reports) if request.compile else reports[0]


def report_from_manifest(job_id: str, manifest: dict, peak_tflops: float | None = None) -> BenchReport:
    """The bench figures of a finished native job's manifest."""
    engine, spec = manifest.get("engine", {}), manifest["spec"]
    chunks = engine.get("chunks") or []
    if not chunks:
        raise WorldplayError(
            f"job {job_id} has no per-chunk figures in its manifest", "the bench needs the native engine"
        )
    steady = [chunk["index"] for chunk in chunks if chunk["index"] >= STEADY_FROM] or [
        chunk["index"] for chunk in chunks[1:] or chunks
    ]

    seconds = statistics.median(chunk_seconds(chunks[index]) for index in steady)
    chunk_latents = chunks[0]["latents"][1] - chunks[0]["latents"][0]
    chunk_frames = 4 * chunk_latents
    flops = [chunks[index].get("tflop") for index in steady]
    tflop = statistics.median(flops) if all(value is not None for value in flops) else None
    achieved = tflop / seconds if tflop is not None and seconds > 0 else None
    device_name = engine.get("device_name") or engine.get("device", "")
    peak = peak_tflops or device_peak_tflops(device_name)
    stages = engine.get("stages_s", {})
    return BenchReport(
        job_id=job_id,
        variant=spec["variant"],
        device=engine.get("device", ""),
        device_name=device_name,
        gpus=engine.get("sequence_parallel", spec.get("gpus", 1)),
        profile=engine.get("memory", {}).get("profile", ""),
        width=spec["width"],
        height=spec["height"],
        frames=spec["frames"],
        chunk_frames=chunk_frames,
        steps=engine.get("steps", spec["steps"]),
        guidance=engine.get("guidance_scale", spec["guidance"]),
        load_s=engine.get("resident", {}).get("load_s", 0.0),
        encode_s=stages.get("encode", 0.0),
        text_s=stages.get("text", 0.0),
        chunks=chunks,
        steady_chunks=steady,
        seconds_per_chunk=seconds,
        frames_per_second=chunk_frames / seconds if seconds > 0 else 0.0,
        tflop_per_chunk=tflop,
        achieved_tflops=achieved,
        peak_tflops=peak,
        peak_fraction=achieved / peak if achieved is not None and peak else None,
        peak_memory_bytes=engine.get("memory", {}).get("peak_bytes", {}),
        stages_s=stages,
        attention=engine.get("attention", ""),
        weights=engine.get("weights", "default"),
        compile=engine.get("compile"),
        compile_s=engine.get("compile_stats", {}).get("compile_s"),
    )
