"""The latent upsampler of the 720p super-resolution stage (official class `SRTo720pUpsampler`).

A small causal 3D conv net on 720p-sized latents (the 480p latents after a bilinear resize): an input
conv, residual blocks of conv-SiLU-conv-SiLU-conv plus skip, and an output conv; every conv is the VAE's
3x3x3 causal conv (replicate padding, two frames of history in front). Parameter names are the official
ones (`in_conv.conv.weight`, `blocks.<i>.block.<0|2|4>.conv.weight`, `out_conv.conv.weight`), so the
released `upsampler/720p_sr_distilled` weights load strictly. It runs in fp32, as the official stage does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from worker.models.checkpoint import CheckpointError, compare_keys, resolve_weight_files
from worker.models.vae import CausalConv3d
from worldplay_cli.contract import layout

CLASS_NAME = "SRTo720pUpsampler"


@dataclass(frozen=True)
class UpsamplerConfig:
    """`upsampler/720p_sr_distilled/config.json`; defaults are the official constructor's."""

    in_channels: int = 32
    out_channels: int = 32
    hidden_channels: int = 64
    num_blocks: int = 6
    global_residual: bool = False

    @classmethod
    def from_official_dict(cls, data: dict) -> UpsamplerConfig:
        """The official config: `_`-prefixed bookkeeping ignored, any other unknown key refused (another
        upsampler, e.g. the 1080p one, must not load silently)."""
        if data.get("_class_name", CLASS_NAME) != CLASS_NAME:
            raise CheckpointError(
                f"upsampler config is a {data['_class_name']}, not a {CLASS_NAME}",
                f"point at {layout.SR_UPSAMPLER_DIR} (run `worldplay download sr`)",
            )
        values = {key: value for key, value in data.items() if not key.startswith("_")}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise CheckpointError(f"unknown upsampler config keys: {', '.join(unknown)}", "re-download the upsampler")
        if values.get("hidden_channels") is None:
            values.pop("hidden_channels", None)
        return cls(**values)

    def to_official_dict(self) -> dict:
        return {"_class_name": CLASS_NAME, **asdict(self)}


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # indices 0, 2, 4 hold the convs, as in the official nn.Sequential (1 and 3 are the SiLUs)
        self.block = nn.Sequential(
            CausalConv3d(channels, channels), nn.SiLU(), CausalConv3d(channels, channels), nn.SiLU(),
            CausalConv3d(channels, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class LatentUpsampler(nn.Module):
    def __init__(self, config: UpsamplerConfig | None = None):
        super().__init__()
        self.config = config = config or UpsamplerConfig()
        self.in_conv = CausalConv3d(config.in_channels, config.hidden_channels)
        self.blocks = nn.ModuleList(ResidualBlock(config.hidden_channels) for _ in range(config.num_blocks))
        self.out_conv = CausalConv3d(config.hidden_channels, config.out_channels)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, T, H, W] -> [B, out_channels, T, H, W] on the same grid."""
        hidden = self.in_conv(latents)
        for block in self.blocks:
            hidden = block(hidden)
        out = self.out_conv(hidden)
        if self.config.global_residual and out.shape == latents.shape:
            out = out + latents
        return out


def load_upsampler(directory: str | Path, device: torch.device | str = "cpu") -> LatentUpsampler:
    """Build from `<directory>/config.json` and load its weights strictly (fp32)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    path = directory / layout.CONFIG_NAME
    try:
        config = UpsamplerConfig.from_official_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"cannot read upsampler config {path}: {error}", "re-download the upsampler") from error
    model = LatentUpsampler(config)
    state: dict[str, torch.Tensor] = {}
    for file in resolve_weight_files(directory):
        state.update(load_file(str(file)))
    report = compare_keys(model, {name: tuple(tensor.shape) for name, tensor in state.items()})
    if not report.ok:
        raise CheckpointError(
            f"{directory} does not fit the {CLASS_NAME} its config describes: {report.summary()}",
            "re-download the upsampler (`worldplay download sr`)",
        )
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    return model.to(device).eval().requires_grad_(False)
