"""Write a complete tiny random model directory in the official layout: `python -m worker.pipeline.tiny_model DIR`.

Transformer (all four action checkpoints), the SR transformer and upsampler, VAE, scheduler, Qwen2.5-VL /
byT5 + Glyph / SigLIP encoders
with tokenizers built locally: no download, a few MB, and every native code path runs on a laptop CPU in
seconds. The weights are random, so the videos are noise-like; what is real is every shape, file name and
code path. `worldplay dev tiny-model DIR` runs this module in a subprocess (the CLI never imports torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from worker.models.checkpoint import WEIGHTS_NAME
from worldplay_cli.contract import layout, variants

# Written last, so a directory holding it is complete.
MARKER = layout.TINY_MARKER


def write_tiny_model(root: str | Path, seed: int = 0, hub_names: bool = False) -> Path:
    """Write the tiny model directory under `root`; returns `root`.

    `hub_names` stores the distilled checkpoint under its Hugging Face name (`model.safetensors`), the
    layout a bare Hub snapshot has before the official script renames it.
    """
    from worker.models.tiny import write_tiny_sr, write_tiny_transformer
    from worker.models.tiny_vae import write_tiny_vae
    from worker.pipeline.tiny_encoders import write_tiny_encoders

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_transformer(root, seed=seed)
    write_tiny_sr(root, seed=seed + 5)
    write_tiny_vae(root, seed=seed + 3)
    write_tiny_encoders(root, seed=seed)
    if hub_names:
        for record in variants.all_variants():
            if record.hub_weights_name:
                directory = root / record.action_dir
                os.replace(directory / WEIGHTS_NAME, directory / record.hub_weights_name)
    (root / MARKER).write_text(json.dumps({"version": 1, "kind": "tiny-random", "seed": seed}, indent=2) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hub-names", action="store_true", help="keep the distilled checkpoint's Hub file name")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    write_tiny_model(args.directory, args.seed, args.hub_names)
    print(json.dumps({"model_dir": str(args.directory.resolve())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
