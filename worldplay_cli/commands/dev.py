"""`worldplay dev ...`: helpers for developing and testing worldplay itself.

`worldplay dev tiny-model DIR` writes a complete model directory in the official layout with tiny random
weights (transformer with all four action checkpoints, VAE, scheduler, Qwen2.5-VL / byT5 + Glyph /
SigLIP encoders and tokenizers made locally, no download), so `worldplay generate --engine native` runs
on a laptop CPU in seconds. The writing needs torch, which the CLI never imports: it runs in a
subprocess (`python -m worker.pipeline.tiny_model`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import typer

from worldplay_cli.contract import layout, variants
from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.options import JsonOption
from worldplay_cli.output import emit

dev_app = typer.Typer(help="Developer helpers (tiny test models).", no_args_is_help=True)

# Written last by the tiny model writer; a directory holding it may be rewritten.
TINY_MARKER = layout.TINY_MARKER


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")


@dev_app.command("tiny-model")
def tiny_model(
    directory: Path = typer.Argument(..., help="Where to write the model directory (new or empty)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    hub_names: bool = typer.Option(
        False, "--hub-names", help="Keep the distilled checkpoint's Hub file name (model.safetensors)."
    ),
    as_json: JsonOption = False,
) -> None:
    """Write a tiny random model directory in the official layout (a few MB, no download)."""
    root = write_tiny_model(directory.expanduser().absolute(), seed, hub_names)
    data = {
        "model_dir": str(root),
        "variants": list(variants.names()),
        "example": f"worldplay generate --engine native --variant {variants.DEFAULT} --model-dir {root} --width 64 --height 48",
    }

    def render(console) -> None:
        console.print(f"tiny model directory written: [bold]{root}[/]")
        console.print(f"variants: {', '.join(variants.names())} (random weights: the videos are noise)")
        console.print(f"try: {data['example']}")

    emit(data, as_json, render)


def write_tiny_model(root: Path, seed: int, hub_names: bool) -> Path:
    """Run the writer in a subprocess; refuse to write into a directory that holds anything else."""
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} exists and is not a directory", "choose a new or empty directory")
    if root.is_dir() and any(root.iterdir()) and not (root / TINY_MARKER).is_file():
        raise BadInput(
            f"{root} is not empty", "choose a new or empty directory (a tiny model directory may be rewritten)"
        )
    command = [sys.executable, "-m", "worker.pipeline.tiny_model", str(root), "--seed", str(seed)]
    if hub_names:
        command.append("--hub-names")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {completed.returncode}"
        missing = re.search(r"No module named '([\w.]+)'", detail)
        if missing:
            raise WorldplayError(
                f"the tiny model needs the worker extra (torch, safetensors, transformers); "
                f"{missing.group(1).split('.')[0]} is not installed",
                'from a clone: pip install -e ".[worker]"  (or: pip install "worldplay[worker]"); '
                "GPU users install their CUDA torch first",
            )
        raise WorldplayError(
            f"writing the tiny model failed: {detail}",
            f"`{sys.executable} -m worker.pipeline.tiny_model {root}` shows the full output",
        )
    try:
        return Path(json.loads(completed.stdout.strip().splitlines()[-1])["model_dir"])
    except (ValueError, KeyError, IndexError):
        raise WorldplayError(f"the tiny model writer printed no result: {completed.stdout[-200:]!r}") from None
