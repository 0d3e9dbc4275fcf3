"""HunyuanVideo-1.5 causal 3D VAE (32 latent channels, 16x spatial, 4x temporal compression).

Single-file model that loads the official `vae/` directory (`config.json` +
`diffusion_pytorch_model.safetensors`) with the official parameter names. The encoder and decoder run
one causal step at a time (encode: frame 0, then groups of 4 frames; decode: one latent frame), carrying
the last two input frames of every causal convolution from step to step. That is how the official code
computes, so `encode`/`decode` match it; it also makes decoding streamable: `StreamingDecoder` decodes
latent chunks as the sampler finishes them and yields pixel frames, with results equal to `decode` of the
whole latent video.

Latents here are *unscaled* (the posterior mode); the diffusion model works on `latents * scaling_factor`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from worker.models.vae_layers import ChannelRMSNorm, ConvCache, config_values, with_history
from worldplay_cli.contract import layout

CONFIG_NAME = layout.CONFIG_NAME
WEIGHTS_NAME = layout.WEIGHTS_NAME

# A causal conv with temporal kernel 3 needs the two previous input frames.
CACHED_FRAMES = 2


@dataclass(frozen=True)
class VAEConfig:
    """`vae/config.json` of tencent/HunyuanVideo-1.5 (class `AutoencoderKLConv3D`); defaults = released values."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 32
    block_out_channels: tuple[int, ...] = (128, 256, 512, 1024, 1024)
    layers_per_block: int = 2
    ffactor_spatial: int = 16
    ffactor_temporal: int = 4
    sample_size: int = 256
    sample_tsize: int = 64
    scaling_factor: float = 1.03682
    shift_factor: float | None = None
    downsample_match_channel: bool = True
    upsample_match_channel: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        """Build from a config.json dict; `_`-prefixed diffusers bookkeeping keys are ignored."""
        return cls(**config_values(cls, data, "VAE"))

    @classmethod
    def from_json(cls, path: str | Path) -> VAEConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        data = {"_class_name": "AutoencoderKLConv3D", **asdict(self)}
        data["block_out_channels"] = list(self.block_out_channels)
        return data


def space_to_channels(x: torch.Tensor, rt: int, rh: int, rw: int) -> torch.Tensor:
    """[B, C, T*rt, H*rh, W*rw] -> [B, rt*rh*rw*C, T, H, W] with channel order (rt, rh, rw, C)."""
    batch, channels, frames, height, width = x.shape
    x = x.view(batch, channels, frames // rt, rt, height // rh, rh, width // rw, rw)
    x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(batch, rt * rh * rw * channels, frames // rt, height // rh, width // rw)


def channels_to_space(x: torch.Tensor, rt: int, rh: int, rw: int) -> torch.Tensor:
    """Inverse of `space_to_channels`: [B, rt*rh*rw*C, T, H, W] -> [B, C, T*rt, H*rh, W*rw]."""
    batch, channels, frames, height, width = x.shape
    out_channels = channels // (rt * rh * rw)
    x = x.view(batch, rt, rh, rw, out_channels, frames, height, width)
    x = x.permute(0, 4, 5, 1, 6, 2, 7, 3)
    return x.reshape(batch, out_channels, frames * rt, height * rh, width * rw)


class CausalConv3d(nn.Module):
    """Conv3d padded causally in time and by replication everywhere (the official pad mode).

    With a cache, the previous step's trailing input frames stand in for the causal padding, so running
    step by step equals one pass over the concatenated steps.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        # 1. prepend the cached frames of the previous step
        stream, history = with_history(x, cache, self, CACHED_FRAMES)
        # 2. replicate-pad whatever history is still missing (only at the start of the video)
        spatial = self.kernel_size // 2
        missing = self.kernel_size - 1 - history
        stream = F.pad(stream, (spatial, spatial, spatial, spatial, missing, 0), mode="replicate")
        return self.conv(stream)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = ChannelRMSNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.nin_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)), cache)
        hidden = self.conv2(F.silu(self.norm2(hidden)), cache)
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + hidden


class AttnBlock(nn.Module):
    """Single-head self-attention over all tokens, causal across frames."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ChannelRMSNorm(channels)
        self.q = nn.Conv3d(channels, channels, 1)
        self.k = nn.Conv3d(channels, channels, 1)
        self.v = nn.Conv3d(channels, channels, 1)
        self.proj_out = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        normed = self.norm(x)

        # 1. project and flatten to [B, 1, F*H*W, C] tokens in (f, h, w) order
        def tokens(projection: nn.Conv3d) -> torch.Tensor:
            return projection(normed).flatten(2).transpose(1, 2).unsqueeze(1)

        query, key, value = tokens(self.q), tokens(self.k), tokens(self.v)

        # 2. a token sees every token of its own and earlier frames
        mask = None
        if frames > 1:
            frame_of_token = torch.arange(frames, device=x.device).repeat_interleave(height * width)
            mask = frame_of_token[:, None] >= frame_of_token[None, :]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)

        # 3. back to [B, C, F, H, W]
        attended = attended.squeeze(1).transpose(1, 2).reshape(batch, channels, frames, height, width)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Conv, then fold 2x2 space (and 2 frames) into channels, plus a channel-averaged folded shortcut."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        factor = 8 if temporal else 4
        self.temporal = temporal
        self.conv = CausalConv3d(in_channels, out_channels // factor)
        self.group_size = factor * in_channels // out_channels

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        hidden = self.conv(x, cache)
        batch = x.shape[0]
        if self.temporal and x.shape[2] == 1:
            # the first frame has no partner in time: fold space only and duplicate the channels
            hidden = space_to_channels(hidden, 1, 2, 2)
            hidden = torch.cat([hidden, hidden], dim=1)
            shortcut = space_to_channels(x, 1, 2, 2)
            group_size = self.group_size // 2
        else:
            rt = 2 if self.temporal else 1
            hidden = space_to_channels(hidden, rt, 2, 2)
            shortcut = space_to_channels(x, rt, 2, 2)
            group_size = self.group_size
        shortcut = shortcut.view(batch, hidden.shape[1], group_size, *shortcut.shape[2:]).mean(dim=2)
        return hidden + shortcut


class Upsample(nn.Module):
    """Conv, then unfold channels into 2x2 space (and 2 frames), plus a channel-repeated unfolded shortcut."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        factor = 8 if temporal else 4
        self.temporal = temporal
        self.conv = CausalConv3d(in_channels, out_channels * factor)
        self.repeats = factor * out_channels // in_channels

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None, first_frame: bool = False) -> torch.Tensor:
        hidden = self.conv(x, cache)
        if not self.temporal:
            hidden = channels_to_space(hidden, 1, 2, 2)
            shortcut = channels_to_space(x.repeat_interleave(self.repeats, dim=1), 1, 2, 2)
        elif first_frame:
            # the first latent frame decodes to a single frame: unfold space only, keep half the channels
            hidden = channels_to_space(hidden, 1, 2, 2)
            hidden = hidden[:, : hidden.shape[1] // 2]
            shortcut = channels_to_space(x, 1, 2, 2).repeat_interleave(self.repeats // 2, dim=1)
        else:
            hidden = channels_to_space(hidden, 2, 2, 2)
            shortcut = channels_to_space(x, 2, 2, 2).repeat_interleave(self.repeats, dim=1)
        return hidden + shortcut


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        channels = config.block_out_channels
        self.latent_channels = config.latent_channels
        spatial_levels = int(math.log2(config.ffactor_spatial))
        first_temporal_level = int(math.log2(config.ffactor_spatial // config.ffactor_temporal))

        self.conv_in = CausalConv3d(config.in_channels, channels[0])
        self.down = nn.ModuleList()
        block_in = channels[0]
        for level, block_out in enumerate(channels):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(config.layers_per_block):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level < spatial_levels:
                down_out = channels[level + 1] if config.downsample_match_channel else block_in
                stage.downsample = Downsample(block_in, down_out, temporal=level >= first_temporal_level)
                block_in = down_out
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = ChannelRMSNorm(block_in)
        self.conv_out = CausalConv3d(block_in, 2 * config.latent_channels)

    def forward(self, video: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        # video: [B, 3, T, H, W] -> moments [B, 2*latent, T', H/16, W/16]
        # 1. stem and downsampling stages
        hidden = self.conv_in(video, cache)
        for stage in self.down:
            for block in stage.block:
                hidden = block(hidden, cache)
            if hasattr(stage, "downsample"):
                hidden = stage.downsample(hidden, cache)

        # 2. middle
        hidden = self.mid.block_1(hidden, cache)
        hidden = self.mid.attn_1(hidden)
        hidden = self.mid.block_2(hidden, cache)

        # 3. head, with a shortcut averaging channel groups down to the moment channels
        batch, channels = hidden.shape[:2]
        group_size = channels // (2 * self.latent_channels)
        shortcut = hidden.view(batch, channels // group_size, group_size, *hidden.shape[2:]).mean(dim=2)
        hidden = self.conv_out(F.silu(self.norm_out(hidden)), cache)
        return hidden + shortcut


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        channels = tuple(reversed(config.block_out_channels))
        spatial_levels = int(math.log2(config.ffactor_spatial))
        temporal_levels = int(math.log2(config.ffactor_temporal))
        self.repeats = channels[0] // config.latent_channels

        block_in = channels[0]
        self.conv_in = CausalConv3d(config.latent_channels, block_in)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)

        self.up = nn.ModuleList()
        for level, block_out in enumerate(channels):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(config.layers_per_block + 1):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level < spatial_levels or level < temporal_levels:
                up_out = channels[level + 1] if config.upsample_match_channel else block_in
                stage.upsample = Upsample(block_in, up_out, temporal=level < temporal_levels)
                block_in = up_out
            self.up.append(stage)

        self.norm_out = ChannelRMSNorm(block_in)
        self.conv_out = CausalConv3d(block_in, config.out_channels)

    def forward(self, latents: torch.Tensor, cache: ConvCache | None = None, first_frame: bool = False) -> torch.Tensor:
        # latents: [B, latent, 1, h, w] -> pixels [B, 3, 1 if first_frame else 4, 16h, 16w]
        # 1. stem with a channel-repeated shortcut
        hidden = self.conv_in(latents, cache) + latents.repeat_interleave(self.repeats, dim=1)

        # 2. middle
        hidden = self.mid.block_1(hidden, cache)
        hidden = self.mid.attn_1(hidden)
        hidden = self.mid.block_2(hidden, cache)

        # 3. upsampling stages
        for stage in self.up:
            for block in stage.block:
                hidden = block(hidden, cache)
            if hasattr(stage, "upsample"):
                hidden = stage.upsample(hidden, cache, first_frame)

        # 4. head
        return self.conv_out(F.silu(self.norm_out(hidden)), cache)


@dataclass(frozen=True)
class SpatialTiling:
    """Decode in overlapping square latent tiles and blend linearly across the overlap.

    Defaults follow the official tiling (256-px tiles, overlap factor 0.25 -> 4 latents, 64 px blend).
    Every tile keeps its own causal cache, so tiled decoding streams like untiled decoding.
    """

    tile_latents: int = 16
    overlap_latents: int = 4

    def __post_init__(self):
        if not 0 <= self.overlap_latents < self.tile_latents:
            raise ValueError("overlap_latents must be in [0, tile_latents)")

    @property
    def stride(self) -> int:
        return self.tile_latents - self.overlap_latents


class HunyuanVideo15VAE(nn.Module):
    """The official `AutoencoderKLConv3D` computation with the official parameter names (inference only)."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1+4k, H, W] in [-1, 1] -> posterior mode [B, latent, 1+k, H/16, W/16] (unscaled)."""
        num_frames = video.shape[2]
        if (num_frames - 1) % self.config.ffactor_temporal:
            raise ValueError(f"VAE encode needs 1 + {self.config.ffactor_temporal}k frames, got {num_frames}")
        video = video.to(self.dtype)
        cache: ConvCache = {}
        # the first frame is its own step, then one step per group of ffactor_temporal frames
        bounds = [0, *range(1, num_frames + 1, self.config.ffactor_temporal)]
        moments = [self.encoder(video[:, :, start:end], cache) for start, end in zip(bounds, bounds[1:])]
        return torch.cat(moments, dim=2)[:, : self.config.latent_channels]

    def decode(self, latents: torch.Tensor, tiling: SpatialTiling | None = None) -> torch.Tensor:
        """[B, latent, n, h, w] (unscaled) -> [B, 3, 1+4(n-1), 16h, 16w], roughly in [-1, 1]."""
        decoder = StreamingDecoder(self, tiling)
        return torch.cat(list(decoder.push(latents)), dim=2)


class StreamingDecoder:
    """Decodes a latent video chunk by chunk; the concatenated output equals `vae.decode(all latents)`.

    `push(chunk)` yields one pixel tensor per latent frame as soon as it is decoded: the first latent frame
    of the video gives 1 frame, every later one gives `ffactor_temporal` frames.
    """

    def __init__(self, vae: HunyuanVideo15VAE, tiling: SpatialTiling | None = None):
        self.vae = vae
        self.tiling = tiling
        self.latent_frames_done = 0
        self._caches: dict[tuple[int, int], ConvCache] = {}

    @property
    def frames_done(self) -> int:
        if self.latent_frames_done == 0:
            return 0
        return 1 + (self.latent_frames_done - 1) * self.vae.config.ffactor_temporal

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> Iterator[torch.Tensor]:
        """latents: [B, latent, t, h, w] unscaled; yields [B, 3, frames, 16h, 16w] per latent frame."""
        latents = latents.to(self.vae.dtype)
        for index in range(latents.shape[2]):
            yield self._decode_frame(latents[:, :, index : index + 1])
            self.latent_frames_done += 1

    def _decode_frame(self, latent: torch.Tensor) -> torch.Tensor:
        first_frame = self.latent_frames_done == 0

        def decode_tile(tile: torch.Tensor, position: tuple[int, int]) -> torch.Tensor:
            return self.vae.decoder(tile, self._caches.setdefault(position, {}), first_frame)

        height, width = latent.shape[-2:]
        tiling = self.tiling
        if tiling is None or (height <= tiling.tile_latents and width <= tiling.tile_latents):
            return decode_tile(latent, (0, 0))
        return tiled_decode(latent, tiling, self.vae.config.ffactor_spatial, decode_tile)


def tiled_decode(
    latent: torch.Tensor,
    tiling: SpatialTiling,
    scale: int,
    decode_tile: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor],
) -> torch.Tensor:
    """Decode [..., h, w] latents tile by tile (`decode_tile(tile, (top, left))` upsamples by `scale`)."""
    height, width = latent.shape[-2:]
    size = tiling.tile_latents

    # 1. decode every tile
    rows = [
        [
            decode_tile(latent[..., top : top + size, left : left + size], (top, left))
            for left in range(0, width, tiling.stride)
        ]
        for top in range(0, height, tiling.stride)
    ]

    # 2. blend each tile into its upper and left neighbours, keep one stride of pixels per tile
    blend, keep = tiling.overlap_latents * scale, tiling.stride * scale
    kept_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = blend_into(rows[i - 1][j], tile, blend, dim=-2)
            if j > 0:
                tile = blend_into(row[j - 1], tile, blend, dim=-1)
            # later neighbours blend against the already blended tile, as the official in-place code does
            row[j] = tile
            kept.append(tile[..., :keep, :keep])
        kept_rows.append(torch.cat(kept, dim=-1))
    return torch.cat(kept_rows, dim=-2)


def blend_into(previous: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Linear cross-fade from the end of `previous` into the start of `tile` along `dim`."""
    extent = min(previous.shape[dim], tile.shape[dim], extent)
    if extent == 0:
        return tile
    weight_shape = [1] * tile.dim()
    weight_shape[dim] = extent
    weight = (torch.arange(extent, dtype=tile.dtype, device=tile.device) / extent).view(weight_shape)
    head = previous.narrow(dim, previous.shape[dim] - extent, extent) * (1 - weight)
    head = head + tile.narrow(dim, 0, extent) * weight
    return torch.cat([head, tile.narrow(dim, extent, tile.shape[dim] - extent)], dim=dim)


def load_vae(
    directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> HunyuanVideo15VAE:
    """Load the official `vae/` directory (config.json + diffusion_pytorch_model.safetensors), strictly."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = VAEConfig.from_json(directory / CONFIG_NAME)
    with torch.device("meta"):
        vae = HunyuanVideo15VAE(config)
    state = load_file(str(directory / WEIGHTS_NAME), device=str(device))
    vae.load_state_dict({key: value.to(dtype) for key, value in state.items()}, strict=True, assign=True)
    return vae.eval()
