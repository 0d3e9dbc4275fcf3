"""What the two causal video VAEs (HunyuanVideo-1.5 in `vae.py`, Wan2.2 in `wan/vae.py`) share.

Both read a diffusers `config.json` into a frozen dataclass the same way (`config_values`).

Both run their encoder and decoder one causal step at a time: every temporal convolution keeps the
trailing input frames of the previous step in a `ConvCache` and prepends them to the next step's input,
which makes the steps add up to one pass over the whole video (and lets decoding stream). Both normalise
with the same channel RMS norm; only the shape of its scale differs between their checkpoints.
"""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn


def config_values(config_class: type, data: dict, label: str) -> dict:
    """The keyword arguments of dataclass `config_class` in a config.json dict: `_`-prefixed diffusers
    bookkeeping keys are ignored, unknown keys refused, lists made tuples (the dataclasses are frozen)."""
    known = {field.name for field in fields(config_class)}
    unknown = sorted(key for key in data if key not in known and not key.startswith("_"))
    if unknown:
        raise ValueError(f"unknown {label} config keys: {', '.join(unknown)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items() if key in known}


# A cache maps each causal layer to the trailing input frames of the previous step.
ConvCache = dict[nn.Module, torch.Tensor]


def with_history(x: torch.Tensor, cache: ConvCache | None, key: nn.Module, keep: int) -> tuple[torch.Tensor, int]:
    """`x` ([B, C, T, H, W]) with the frames cached for `key` prepended, and how many were prepended.

    The last `keep` frames of the result replace the cache entry, ready for the next step.
    """
    previous = cache.get(key) if cache is not None else None
    stream = x if previous is None else torch.cat([previous, x], dim=2)
    if cache is not None:
        cache[key] = stream[:, :, stream.shape[2] - keep :].clone()
    return stream, 0 if previous is None else previous.shape[2]


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels (dim 1) as `normalize(x) * sqrt(C) * gamma`; official name `gamma`.

    `spatial_dims` is the number of trailing singleton dims of `gamma` in the checkpoint (3 for video
    layers, 2 where a checkpoint normalises frames as images). `float32_statistics` normalises half-precision
    inputs in float32, as diffusers' Wan VAE does.
    """

    def __init__(self, channels: int, spatial_dims: int = 3, float32_statistics: bool = False):
        super().__init__()
        self.scale = channels**0.5
        self.float32_statistics = float32_statistics
        self.gamma = nn.Parameter(torch.ones(channels, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32_statistics and x.dtype in (torch.float16, torch.bfloat16):
            normalized = F.normalize(x.float(), dim=1).to(x.dtype)
        else:
            normalized = F.normalize(x, dim=1)
        return normalized * self.scale * self.gamma
