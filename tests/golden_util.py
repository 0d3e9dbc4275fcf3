"""Regenerate the golden tiny weights from their seeds instead of committing tens of megabytes.

The official tiny weights were drawn in parameter-registration order (listed in the `*_param_order.txt`
files) as `torch.randn(shape, generator=g) * scale` with one seeded CPU generator, so replaying that
order reproduces them bit for bit.
"""

from __future__ import annotations

import ast
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"

TRANSFORMER = ("tiny_transformer_param_order.txt", 1, 0.05)
VAE = ("tiny_vae_param_order.txt", 3, 0.1)
# the super-resolution set (tools/make_sr_golden.py)
SR_TRANSFORMER = ("tiny_sr_transformer_param_order.txt", 11, 0.05)
SR_UPSAMPLER = ("tiny_sr_upsampler_param_order.txt", 12, 0.1)
# the WAN VAE set (tools/make_wan_vae_golden.py)
WAN_VAE = ("wan_vae_param_order.txt", 21, 0.1)
# the WAN-5B transformer set (tools/make_wan_golden.py)
WAN_TRANSFORMER = ("wan_tiny_param_order.txt", 31, 0.05)


def read_param_order(name: str) -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in (GOLDEN_DIR / name).read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            entries.append((key, tuple(ast.literal_eval(shape))))
    return entries


def regenerate_state_dict(which: tuple[str, int, float]) -> dict:
    """Return the official tiny state dict (official key names) for `TRANSFORMER`, `VAE`, `SR_TRANSFORMER`,
    `SR_UPSAMPLER`, `WAN_VAE` or `WAN_TRANSFORMER`."""
    import torch

    order_file, seed, scale = which
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * scale for key, shape in read_param_order(order_file)}


def load_io(name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN_DIR / name))
