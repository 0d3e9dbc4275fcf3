"""`worldplay dev ...`: helpers for developing and testing worldplay itself.

`worldplay dev tiny-model DIR` writes a complete model directory in the official layout (`--family wan`: the
WAN-5B family's layout) with tiny random
weights (transformer with all four action checkpoints, VAE, scheduler, Qwen2.5-VL / byT5 + Glyph /
SigLIP encoders and tokenizers made locally, no download), so `worldplay generate --engine native` runs
on a laptop CPU in seconds. The writing needs torch, which the CLI never imports: it runs in a
subprocess (`worldplay_cli.tiny`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.options import JsonOption
from worldplay_cli.output import emit
from worldplay_cli.tiny import write_tiny_model

dev_app = typer.Typer(help="Developer helpers (tiny test models).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")


@dev_app.command("tiny-model")
def tiny_model(
    directory: Path = typer.Argument(..., help="Where to write the model directory (new or empty)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    hub_names: bool = typer.Option(
        False, "--hub-names", help="Keep the distilled checkpoint's Hub file name (model.safetensors)."
    ),
    family: str = typer.Option(
        "hunyuan", "--family", help=f"Whose layout to write: {', '.join(variants.FAMILIES)}.", show_default=True
    ),
    as_json: JsonOption = False,
) -> None:
    """Write a tiny random model directory in the official layout (a few MB, no download)."""
    if family not in variants.FAMILIES:
        raise BadInput(f"unknown model family {family!r}", f"use one of: {', '.join(variants.FAMILIES)}")
    root = write_tiny_model(directory.expanduser().absolute(), seed, hub_names, family)
    names = [record.name for record in variants.by_preference() if record.family_name == family]
    multiple = variants.FAMILIES[family].size_multiple  # a small size the family accepts
    size = f"--width 64 --height {-(-48 // multiple) * multiple}"
    data = {
        "model_dir": str(root),
        "family": family,
        "variants": names,
        "example": f"worldplay generate --engine native --variant {names[0]} --model-dir {root} {size}",
    }

    def render(console) -> None:
        console.print(f"tiny model directory written: [bold]{root}[/]")
        console.print(f"variants: {', '.join(names)} (random weights: the videos are noise)")
        console.print(f"try: {data['example']}")

    emit(data, as_json, render)
