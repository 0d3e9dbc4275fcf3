"""Write a tiny random HunyuanVideo-1.5 VAE in the official `vae/` layout, for tests and CPU smoke runs.

Weights are drawn as `randn(shape) * scale` from one seeded CPU generator in parameter-registration
order, the recipe of the golden tiny VAE: seed 3 and scale 0.1 reproduce it bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worker.models.vae import CONFIG_NAME, WEIGHTS_NAME, HunyuanVideo15VAE, VAEConfig
from worldplay_cli.contract.layout import ModelLayout

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

    directory = ModelLayout(root).vae_dir
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(state, str(directory / WEIGHTS_NAME))
    return directory


# A grey pooling VAE in the official architecture: 4x spatial, 4x temporal, one latent channel. Every
# residual branch, attention projection and inner conv is zero, so only the architecture's parameter-free
# shortcuts (space<->channel folds with channel means and repeats) carry the signal, and those average
# over each 4x4 block and the first two frames of each group of four (encode), or repeat (decode). The
# decoder's head (RMS norm, SiLU, conv) is made linear to 1e-4 by a large constant channel: with it the
# norm's divisor barely depends on the signal and the SiLU sees only tiny inputs.
POOLING_VAE_CONFIG = VAEConfig(
    latent_channels=1,
    block_out_channels=(8, 16, 32),
    layers_per_block=1,
    ffactor_spatial=4,
    ffactor_temporal=4,
    sample_size=64,
    sample_tsize=16,
)
LUMA = (0.299, 0.587, 0.114)
# The decoder head's constant channel value; larger = more linear (relative error ~ |signal| / it).
HEAD_CONSTANT = 1.0e4


def pooling_vae_state() -> dict[str, torch.Tensor]:
    """The weights of the grey pooling VAE (official parameter names); the index arithmetic below is that
    of `POOLING_VAE_CONFIG`'s channel widths."""
    config = POOLING_VAE_CONFIG
    with torch.device("meta"):
        shapes = {name: parameter.shape for name, parameter in HunyuanVideo15VAE(config).named_parameters()}
    # norms keep gamma = 1, everything else starts at zero
    state = {
        name: torch.ones(shape) if name.endswith("gamma") else torch.zeros(shape) for name, shape in shapes.items()
    }
    center = (slice(None), slice(None), 2, 1, 1)  # the current frame's centre tap of a causal 3x3x3 conv

    # 1. encoder stem: every channel carries the luma of its pixel
    state["encoder.conv_in.conv.weight"][center] = torch.tensor(LUMA)
    # 2. decoder stem: frame k (0..3) of latent i's group shows v_{i-1} + (k+1)/4 (v_i - v_{i-1}), so the
    #    motion between latents spreads evenly over the frames instead of jumping once per group. The two
    #    temporal unfolds put stem channel c (of blocks of 4 per 2x2x2 position) on frame 2*rt0 + rt1 with
    #    rt0 = c // 16 and rt1 = (c % 4) // 2; the stem's channel-repeat shortcut already adds v_i once.
    for channel in range(config.block_out_channels[-1]):
        frame = 2 * (channel // 16) + (channel % 4) // 2
        weight = (frame + 1) / 4
        state["decoder.conv_in.conv.weight"][channel, :, 2, 1, 1] = weight - 1.0
        state["decoder.conv_in.conv.weight"][channel, :, 1, 1, 1] = 1.0 - weight
    # 3. decoder head: a constant on the second half of the last stage's channels (a residual bias) ...
    last_stage = len(config.block_out_channels) - 1
    last_block = config.layers_per_block  # the up stages hold layers_per_block + 1 blocks
    channels = config.block_out_channels[0]
    state[f"decoder.up.{last_stage}.block.{last_block}.conv2.conv.bias"][channels // 2 :] = HEAD_CONSTANT
    # ... so the norm divides by ~K/sqrt(2) whatever the signal v is, the signal channels leave it as
    # ~v*sqrt(2)/K, SiLU halves them (tiny inputs), and the head conv averages them back to v on every colour
    signal = channels // 2
    gain = 2**0.5 * HEAD_CONSTANT
    state["decoder.conv_out.conv.weight"][:, :signal, 2, 1, 1] = gain / signal
    return state


def pooling_vae(scaling_factor: float = 1.0) -> HunyuanVideo15VAE:
    """The grey pooling VAE in memory."""
    from dataclasses import replace

    vae = HunyuanVideo15VAE(replace(POOLING_VAE_CONFIG, scaling_factor=scaling_factor))
    vae.load_state_dict(pooling_vae_state(), strict=True)
    return vae.eval()


def write_pooling_vae(root: str | Path, scaling_factor: float = 1.0) -> Path:
    """Write the grey pooling VAE as `<root>/vae/{config.json, weights}`; returns the `vae` directory."""
    from dataclasses import replace

    from safetensors.torch import save_file

    directory = ModelLayout(root).vae_dir
    directory.mkdir(parents=True, exist_ok=True)
    config = replace(POOLING_VAE_CONFIG, scaling_factor=scaling_factor)
    (directory / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(pooling_vae_state(), str(directory / WEIGHTS_NAME))
    return directory
