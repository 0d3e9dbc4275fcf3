"""Write a complete tiny random model directory in the official layout: `python -m worker.pipeline.tiny_model DIR`.

`--family wan` writes the WAN-5B family's layout instead (`write_tiny_wan_model`): the tiny WAN transformer
saved as `wan_transformer/` (diffusers config + safetensors) and as the distilled training checkpoint
`wan_distilled_model/model.pt` (the same weights under the trainer's wrapper prefixes), the tiny Wan2.2 VAE,
UMT5 encoder and tokenizer, the base's pipeline index and scheduler config.

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


def tiny_wan_config():
    """The tiny WAN transformer beside the tiny VAE (its 48 latent channels) and tiny UMT5 (its width)."""
    from dataclasses import replace

    from worker.models.wan.transformer import WanConfig
    from worker.models.wan.vae import TINY_WAN_VAE_CONFIG

    return replace(WanConfig.tiny(), in_channels=TINY_WAN_VAE_CONFIG.z_dim, out_channels=TINY_WAN_VAE_CONFIG.z_dim)


def write_tiny_wan_model(root: str | Path, seed: int = 0) -> Path:
    """Write the tiny WAN model directory under `root`; returns `root`."""
    from worker.models.wan.transformer import write_tiny_wan_transformer
    from worker.models.wan.vae import write_tiny_wan_vae
    from worker.pipeline.wan_encoders import write_tiny_wan_text_encoder

    root = Path(root)
    where = layout.WanLayout(root)
    config = tiny_wan_config()
    # 1. the transformer in both official formats (wan_transformer/ and the distilled model.pt)
    distilled = root / layout.action_checkpoint("wan-distilled")
    write_tiny_wan_transformer(where.transformer_dir, seed=seed, config=config, distilled_path=distilled)
    # 2. the Wan2.2 base: VAE, UMT5 encoder and tokenizer, scheduler config, pipeline index
    write_tiny_wan_vae(where.vae_dir, seed=seed + 3)
    write_tiny_wan_text_encoder(where.text_encoder_dir, where.tokenizer_dir, seed=seed + 1, d_model=config.text_dim)
    where.scheduler_dir.mkdir(parents=True, exist_ok=True)
    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 5.0}
    (where.scheduler_dir / layout.SCHEDULER_CONFIG_NAME).write_text(json.dumps(scheduler, indent=2) + "\n")
    index = {
        "_class_name": "WanPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    where.model_index.write_text(json.dumps(index, indent=2) + "\n")
    marker = {"version": 1, "kind": "tiny-random", "family": "wan", "seed": seed}
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return root


WRITERS = {"hunyuan": write_tiny_model, "wan": lambda root, seed, hub_names: write_tiny_wan_model(root, seed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hub-names", action="store_true", help="keep the distilled checkpoint's Hub file name")
    parser.add_argument("--family", choices=sorted(variants.FAMILIES), default="hunyuan")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    WRITERS[args.family](args.directory, args.seed, args.hub_names)
    print(json.dumps({"model_dir": str(args.directory.resolve())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
