"""Write a tiny random HunyuanVideo-1.5 VAE in the official `vae/` layout, for tests and CPU smoke runs.

Weights are drawn as `randn(shape) * scale` from one seeded CPU generator in parameter-registration
order, the recipe of the golden tiny VAE: seed 3 and scale 0.1 reproduce it bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worker.models.vae import CONFIG_NAME, WEIGHTS_NAME, HunyuanVideo15VAE, VAEConfig

TINY_VAE_CONFIG = VAEConfig(
    latent_channels=4,
    block_out_channels=(8, 16, 32, 64, 64),
    layers_per_block=1,
    sample_size=64,
    sample_tsize=16,
)


def write_tiny_vae(root: str | Path, seed: int = 3, scale: float = 0.1, config: VAEConfig = TINY_VAE_CONFIG) -> Path:
    """Write `<root>/vae/{config.json, diffusion_pytorch_model.safetensors}`; returns the `vae` directory."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = [(name, parameter.shape) for name, parameter in HunyuanVideo15VAE(config).named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) * scale for name, shape in shapes}

    directory = Path(root) / "vae"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(state, str(directory / WEIGHTS_NAME))
    return directory
