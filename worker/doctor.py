"""`python -m worker.doctor [--model-dir DIR]`: what this Python environment can run, as one JSON object.

`worldplay doctor` runs this in a subprocess, because the CLI never imports torch: torch and CUDA
facts, flash-attn, which variants the model directory can serve, and a recommendation (engine, variant,
GPUs per job, memory profile, worker command) for the detected hardware. Works without torch installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path

from worker.runtime.memory_profiles import GB, choose_profile
from worldplay_cli.contract import layout, sr, variants


def probe_torch() -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"installed": False}
    import torch
    import torch.distributed as dist

    info: dict = {
        "installed": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nccl_available": dist.is_available() and dist.is_nccl_available(),
        "gpus": [],
    }
    if info["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            info["gpus"].append(
                {
                    "index": index,
                    "name": properties.name,
                    "memory_bytes": int(properties.total_memory),
                    "capability": f"{properties.major}.{properties.minor}",
                }
            )
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def probe_package(name: str) -> dict:
    if importlib.util.find_spec(name) is None:
        return {"installed": False}
    try:
        version = importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"installed": True, "version": version}


def probe_model_dir(model_dir: Path) -> dict:
    """Per variant: ready, or the pieces it lacks with the command that fetches them."""
    result: dict = {"path": str(model_dir), "exists": model_dir.is_dir(), "variants": {}}
    if not result["exists"]:
        return result
    try:
        from worker.pipeline.model_dir import VARIANTS, download_command, missing_pieces
    except ImportError as error:  # the worker extras (torch, transformers) are not installed
        result["error"] = f"cannot check without the worker extras: {error}"
        return result
    for variant in VARIANTS:
        missing = missing_pieces(model_dir, variant)
        result["variants"][variant] = {
            "family": variants.get(variant).family_name,
            "ready": not missing,
            "missing": [f"{piece.what} ({piece.path})" for piece in missing],
            "fix": download_command(variant) if missing else None,
        }
    # the optional 720p super-resolution stage (`generate --sr`)
    missing_sr = [path for path in layout.SR_FILES if not (model_dir / path).is_file()]
    result["super_resolution"] = {
        "ready": not missing_sr,
        "missing": missing_sr,
        "fix": download_command(sr.DOWNLOAD_PIECE) if missing_sr else None,
    }
    return result


def gpu_sets(count: int, per_job: int) -> str:
    """`worldplay worker --gpus` value for count // per_job workers of per_job GPUs each."""
    sets = []
    for start in range(0, count - count % per_job, per_job):
        ids = range(start, start + per_job)
        sets.append(str(start) if per_job == 1 else f"{ids[0]}-{ids[-1]}")
    return ",".join(sets)


def recommend(torch_info: dict, flash_attn: dict, ready_variants: list[str]) -> dict:
    """Engine, variant, GPUs per job and memory profile for this hardware, with the reasons."""
    notes: list[str] = []
    preferred = variants.by_preference()  # the fastest first
    fastest = preferred[0]
    variant = next((record.name for record in preferred if record.name in ready_variants), fastest.name)
    if variant not in ready_variants:
        notes.append(
            f"no variant is downloaded yet: `worldplay download {variant}` (the fastest, {fastest.steps} steps)"
        )
    elif variant != fastest.name:
        cfg = ", no CFG" if fastest.cfg_branches == 1 else ""
        notes.append(
            f"{fastest.name} ({fastest.steps} steps{cfg}) is the fastest variant: `worldplay download {fastest.name}`"
        )
    base = {"engine": "preview", "variant": variant, "gpus_per_job": 0, "memory_profile": None,
            "worker_command": "worldplay worker", "estimated_peak_gb": None, "notes": notes}  # fmt: skip
    if not torch_info.get("installed"):
        notes.insert(0, "torch is not installed here: only the preview engine runs; pip install 'worldplay[worker]'")
        return base
    gpus = torch_info.get("gpus", [])
    if not gpus:
        notes.insert(
            0, "no CUDA GPU: the native engine runs on CPU with tiny test models only; use the preview engine here"
        )
        return base
    memory = min(gpu["memory_bytes"] for gpu in gpus)
    record = variants.get(variant)
    # a family whose native pipeline is not sequence parallel runs one GPU per job
    family = record.family
    heads = family.attention_heads
    degrees = [sp for sp in range(1, len(gpus) + 1) if heads % sp == 0] if family.sequence_parallel else [1]
    choices = [(sp, choose_profile("auto", variant, sp, memory)) for sp in degrees]
    fast = [(sp, choice) for sp, choice in choices if choice.fits and choice.profile in ("resident", "offload")]
    fitting = [(sp, choice) for sp, choice in choices if choice.fits]
    sp, choice = (fast or fitting or choices[-1:])[0]
    if not choice.fits:
        notes.insert(0, f"{choice.reason}: expect out-of-memory failures on {len(gpus)} x {memory / GB:.0f} GB")
    with_sr = choose_profile("auto", variant, sp, memory, sr=True) if record.super_resolution else choice
    if choice.fits and not with_sr.fits:
        notes.append(f"--sr (720p super-resolution) does not fit {memory / GB:.0f} GB GPUs: {with_sr.reason}")
    elif choice.fits and with_sr.profile != choice.profile:
        notes.append(
            f"jobs with --sr run memory profile {with_sr.profile} (estimated peak "
            f"{with_sr.estimated_peak_bytes / GB:.1f} GB per GPU: the SR stage adds its own 8.3B transformer)"
        )
    elif sp > 1:
        notes.append(f"{sp} GPUs per job (sequence parallel) so the context cache fits; one job at a time per set")
    if len(gpus) // sp > 1:
        notes.append(f"{len(gpus) // sp} workers serve {len(gpus) // sp} jobs at once; one worker per set of {sp}")
    if not flash_attn.get("installed"):
        notes.append("flash-attn is not installed: attention falls back to torch SDPA (slower); pip install flash-attn")
    if sp > 1 and not torch_info.get("nccl_available"):
        notes.append("this torch build has no NCCL: multi-GPU jobs cannot run")
    base.update(
        engine="native",
        gpus_per_job=sp,
        memory_profile=choice.profile,
        worker_command=f"worldplay worker --gpus {gpu_sets(len(gpus), sp)}",
        estimated_peak_gb=round(choice.estimated_peak_bytes / GB, 1),
    )
    return base


def probe(model_dir: Path | None) -> dict:
    torch_info = probe_torch()
    flash_attn = probe_package("flash_attn")
    report = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "torch": torch_info,
        "flash_attn": flash_attn,
        "model_dir": probe_model_dir(model_dir) if model_dir is not None else None,
    }
    ready = [name for name, state in (report["model_dir"] or {}).get("variants", {}).items() if state["ready"]]
    report["recommendation"] = recommend(torch_info, flash_attn, ready)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.model_dir.expanduser() if args.model_dir else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
