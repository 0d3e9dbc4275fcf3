"""Wan2.2 causal 3D VAE (the Wan2.2-TI2V-5B one: 48 latent channels, 16x spatial, 4x temporal compression).

Single-file model that loads the released diffusers `vae/` directory (`config.json` +
`diffusion_pytorch_model.safetensors`, class `AutoencoderKLWan`) strictly, with the diffusers parameter
names. Pixels are first folded 2x2 into channels (`patch_size` 2, 3 -> 12 channels), then a residual
encoder halves space three times and time twice; the decoder mirrors it.

Both directions run one causal step at a time, as the official code does: the encoder takes frame 0, then
groups of 4 frames; the decoder takes one latent at a time (the first gives 1 frame, every later one 4).
Each temporal convolution keeps the trailing input frames of the previous step in a `ConvCache`, so a
`WanStreamDecoder` fed latents one by one produces exactly what `decode_latents` produces for all of them
(which is how the official pipeline decodes, `decode_next_latent`).

Latents outside this module are *normalised* per channel with the config's `latents_mean`/`latents_std`
(`normalize`/`denormalize`, the one place that does it): `encode_image` returns a normalised posterior
sample and `decode_latents`/`WanStreamDecoder` take normalised latents. `encode` is the raw posterior.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from worker.models.checkpoint import CheckpointError, compare_keys
from worker.models.vae_layers import ChannelRMSNorm, ConvCache, config_values, with_history
from worldplay_cli.contract import layout

CONFIG_NAME = layout.CONFIG_NAME
WEIGHTS_NAME = layout.WEIGHTS_NAME
CLASS_NAME = "AutoencoderKLWan"
# diffusers' posterior clamps the log-variance to this range before taking exp
LOGVAR_RANGE = (-30.0, 20.0)

# fmt: off
# Per-channel statistics of the released Wan2.2 latents (vae/config.json of Wan-AI/Wan2.2-TI2V-5B-Diffusers).
RELEASED_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
RELEASED_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)
# fmt: on


@dataclass(frozen=True)
class WanVAEConfig:
    """`vae/config.json` of Wan-AI/Wan2.2-TI2V-5B-Diffusers (class `AutoencoderKLWan`); defaults = released values.

    The key names (typos included: `temperal_downsample`) are those of the released file.
    """

    base_dim: int = 160
    decoder_base_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = RELEASED_LATENTS_MEAN
    latents_std: tuple[float, ...] = RELEASED_LATENTS_STD
    is_residual: bool = True
    in_channels: int = 12
    out_channels: int = 12
    patch_size: int = 2
    scale_factor_temporal: int = 4
    scale_factor_spatial: int = 16
    # in the released file; diffusers (and so the official pipeline) clamps the decoded pixels regardless
    clip_output: bool = False

    def __post_init__(self):
        # 1. only the Wan2.2 architecture is built here (Wan2.1's VAE has plain, non-residual stages)
        if not self.is_residual:
            raise ValueError("only the Wan2.2 VAE (is_residual: true) is supported, not the Wan2.1 one")
        if self.attn_scales:
            raise ValueError("attn_scales must be empty: the Wan VAE attends only in its middle blocks")
        # 2. the compression factors the config states must be the ones its stages make
        levels = len(self.dim_mult) - 1
        if len(self.temperal_downsample) != levels:
            raise ValueError(f"temperal_downsample needs {levels} entries, one per downsampling stage")
        if self.scale_factor_spatial != self.patch_size * 2**levels:
            raise ValueError(f"scale_factor_spatial {self.scale_factor_spatial} != patch_size * 2^{levels}")
        if self.scale_factor_temporal != 2 ** sum(self.temperal_downsample):
            raise ValueError(f"scale_factor_temporal {self.scale_factor_temporal} != 2^(temporal downsamples)")
        if self.in_channels != 3 * self.patch_size**2 or self.out_channels != self.in_channels:
            raise ValueError("in/out_channels must be 3 * patch_size^2 (RGB folded into channels)")
        if not len(self.latents_mean) == len(self.latents_std) == self.z_dim:
            raise ValueError(f"latents_mean and latents_std need z_dim = {self.z_dim} values each")

    @classmethod
    def from_dict(cls, data: dict) -> WanVAEConfig:
        """Build from a config.json dict; `_`-prefixed diffusers bookkeeping keys are ignored."""
        return cls(**config_values(cls, data, "Wan VAE"))

    @classmethod
    def from_json(cls, path: str | Path) -> WanVAEConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        data = {"_class_name": CLASS_NAME, **asdict(self)}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


def patchify(video: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, F, H*p, W*p] -> [B, C*p*p, F, H, W]; channel order (C, column offset, row offset)."""
    batch, channels, frames, height, width = video.shape
    grid = video.view(batch, channels, frames, height // patch, patch, width // patch, patch)
    # axes: 0 b, 1 c, 2 f, 3 h, 4 row offset, 5 w, 6 column offset
    grid = grid.permute(0, 1, 6, 4, 2, 3, 5)
    return grid.reshape(batch, channels * patch * patch, frames, height // patch, width // patch)


def unpatchify(folded: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of `patchify`: [B, C*p*p, F, H, W] -> [B, C, F, H*p, W*p]."""
    batch, folded_channels, frames, height, width = folded.shape
    channels = folded_channels // (patch * patch)
    grid = folded.view(batch, channels, patch, patch, frames, height, width)
    # axes: 0 b, 1 c, 2 column offset, 3 row offset, 4 f, 5 h, 6 w
    grid = grid.permute(0, 1, 4, 5, 3, 6, 2)
    return grid.reshape(batch, channels, frames, height * patch, width * patch)


def per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D layer to every frame of [B, C, T, H, W]."""
    batch, frames = x.shape[0], x.shape[2]
    images = layer(x.transpose(1, 2).flatten(0, 1))
    return images.unflatten(0, (batch, frames)).transpose(1, 2)


def fold_mean(x: torch.Tensor, out_channels: int, temporal: int, spatial: int) -> torch.Tensor:
    """Parameter-free downsampling shortcut: fold `temporal` frames and `spatial`² pixels into channels
    (order C, t, row, column; a short time axis is zero-padded at the front), then average channel groups
    down to `out_channels`."""
    x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % temporal, 0))
    batch, channels, frames, height, width = x.shape
    grid = x.view(batch, channels, frames // temporal, temporal, height // spatial, spatial, width // spatial, spatial)
    grid = grid.permute(0, 1, 3, 5, 7, 2, 4, 6)
    folded_channels = channels * temporal * spatial * spatial
    grid = grid.reshape(batch, out_channels, folded_channels // out_channels, frames // temporal, *grid.shape[-2:])
    return grid.mean(dim=2)


def unfold_repeat(x: torch.Tensor, out_channels: int, temporal: int, spatial: int, first: bool) -> torch.Tensor:
    """Parameter-free upsampling shortcut, the mirror of `fold_mean`: repeat every channel, then unfold
    channels into `temporal` frames and `spatial`² pixels. The first latent keeps only the last frame."""
    batch, channels, frames, height, width = x.shape
    repeats = out_channels * temporal * spatial * spatial // channels
    grid = x.repeat_interleave(repeats, dim=1)
    grid = grid.view(batch, out_channels, temporal, spatial, spatial, frames, height, width)
    grid = grid.permute(0, 1, 5, 2, 6, 3, 7, 4)
    video = grid.reshape(batch, out_channels, frames * temporal, height * spatial, width * spatial)
    return video[:, :, temporal - 1 :] if first else video


class CausalConv3d(nn.Conv3d):
    """Conv3d zero-padded causally in time and symmetrically in space; parameters `weight`/`bias` as in
    diffusers' `WanCausalConv3d`. With a cache, the previous step's trailing input frames replace the
    zero padding, so stepping equals one pass over the concatenated steps."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3):
        kernel = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, kernel)
        self.history_frames = kernel[0] - 1

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        history = 0
        if self.history_frames:
            x, history = with_history(x, cache, self, self.history_frames)
        rows, columns = self.kernel_size[1] // 2, self.kernel_size[2] // 2
        x = F.pad(x, (columns, columns, rows, rows, self.history_frames - history, 0))
        return super().forward(x)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels, float32_statistics=True)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = ChannelRMSNorm(out_channels, float32_statistics=True)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)), cache)
        hidden = self.conv2(F.silu(self.norm2(hidden)), cache)
        return hidden + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention among the pixels of each frame (frames do not see each other)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ChannelRMSNorm(channels, spatial_dims=2, float32_statistics=True)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def attend(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: [N, C, H, W] -> tokens [N, 1, H*W, C] for q, k and v
        count, channels, height, width = frames.shape
        qkv = self.to_qkv(self.norm(frames)).flatten(2).transpose(1, 2).unsqueeze(1)
        query, key, value = qkv.chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.squeeze(1).transpose(1, 2).reshape(count, channels, height, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + per_frame(self.attend, x)


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # registration order of the released checkpoint: attentions before resnets
        self.attentions = nn.ModuleList([AttentionBlock(channels)])
        self.resnets = nn.ModuleList([ResidualBlock(channels, channels), ResidualBlock(channels, channels)])

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class Downsample(nn.Module):
    """Halve space per frame (zero-pad right/bottom, stride-2 conv); with `temporal`, then halve time with a
    stride-2 conv over the previous step's last frame and this step's frames (the first frame passes)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(channels, channels, 3, stride=2))
        self.time_conv = nn.Conv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        x = per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        if self.time_conv not in cache:
            cache[self.time_conv] = x[:, :, -1:].clone()
            return x
        stream, _ = with_history(x, cache, self.time_conv, 1)
        return self.time_conv(stream)


class Upsample(nn.Module):
    """With `temporal`, double time (a causal conv makes two frames' channels per frame; the first latent's
    frame is not doubled and later latents see no history from it); then double space per frame (nearest
    neighbour, conv)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        if self.time_conv is not None:
            if self.time_conv not in cache:
                cache[self.time_conv] = x[:, :, :0]
            else:
                batch, channels, frames, height, width = x.shape
                pairs = self.time_conv(x, cache).view(batch, 2, channels, frames, height, width)
                x = pairs.permute(0, 2, 3, 1, 4, 5).reshape(batch, channels, 2 * frames, height, width)
        return per_frame(self.resample, x)


class DownStage(nn.Module):
    """Residual blocks, an optional downsample, and a fold-and-average shortcut around both."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.out_channels = out_channels
        self.temporal_factor = 2 if temporal else 1
        self.spatial_factor = 2 if spatial else 1
        self.resnets = nn.ModuleList(
            ResidualBlock(in_channels if index == 0 else out_channels, out_channels) for index in range(num_blocks)
        )
        self.downsampler = Downsample(out_channels, temporal) if spatial else None

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        shortcut = fold_mean(x, self.out_channels, self.temporal_factor, self.spatial_factor)
        for block in self.resnets:
            x = block(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class UpStage(nn.Module):
    """Residual blocks, an optional upsample, and a repeat-and-unfold shortcut around both."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, temporal: bool, upsample: bool):
        super().__init__()
        self.out_channels = out_channels
        self.temporal_factor = 2 if temporal else 1
        self.resnets = nn.ModuleList(
            ResidualBlock(in_channels if index == 0 else out_channels, out_channels) for index in range(num_blocks)
        )
        self.upsampler = Upsample(out_channels, temporal) if upsample else None

    def forward(self, x: torch.Tensor, cache: ConvCache, first: bool) -> torch.Tensor:
        hidden = x
        for block in self.resnets:
            hidden = block(hidden, cache)
        if self.upsampler is None:
            return hidden
        hidden = self.upsampler(hidden, cache)
        return hidden + unfold_repeat(x, self.out_channels, self.temporal_factor, 2, first)


class Encoder(nn.Module):
    def __init__(self, config: WanVAEConfig):
        super().__init__()
        widths = [config.base_dim * multiple for multiple in (1, *config.dim_mult)]
        last = len(config.dim_mult) - 1
        self.conv_in = CausalConv3d(config.in_channels, widths[0])
        self.down_blocks = nn.ModuleList(
            DownStage(
                widths[level],
                widths[level + 1],
                config.num_res_blocks,
                temporal=level < last and config.temperal_downsample[level],
                spatial=level < last,
            )
            for level in range(last + 1)
        )
        self.mid_block = MidBlock(widths[-1])
        self.norm_out = ChannelRMSNorm(widths[-1], float32_statistics=True)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.z_dim)

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        # one step: patchified [B, 12, 1 or 4, H, W] -> moments [B, 2*z, 1, H/8, W/8]
        x = self.conv_in(x, cache)
        for stage in self.down_blocks:
            x = stage(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    def __init__(self, config: WanVAEConfig):
        super().__init__()
        multiples = (config.dim_mult[-1], *reversed(config.dim_mult))
        widths = [config.decoder_base_dim * multiple for multiple in multiples]
        temporal_upsample = tuple(reversed(config.temperal_downsample))
        last = len(config.dim_mult) - 1
        self.conv_in = CausalConv3d(config.z_dim, widths[0])
        self.mid_block = MidBlock(widths[0])
        self.up_blocks = nn.ModuleList(
            UpStage(
                widths[level],
                widths[level + 1],
                config.num_res_blocks + 1,
                temporal=level < last and temporal_upsample[level],
                upsample=level < last,
            )
            for level in range(last + 1)
        )
        self.norm_out = ChannelRMSNorm(widths[-1], float32_statistics=True)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels)

    def forward(self, latent: torch.Tensor, cache: ConvCache, first: bool) -> torch.Tensor:
        # one latent [B, z, 1, h, w] -> patchified pixels [B, 12, 1 if first else 4, 8h, 8w]
        x = self.conv_in(latent, cache)
        x = self.mid_block(x, cache)
        for stage in self.up_blocks:
            x = stage(x, cache, first)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class WanVAE(nn.Module):
    """The diffusers `AutoencoderKLWan` computation (Wan2.2 variant) with its parameter names; inference only."""

    def __init__(self, config: WanVAEConfig | None = None):
        super().__init__()
        self.config = config or WanVAEConfig()
        self.encoder = Encoder(self.config)
        self.quant_conv = CausalConv3d(2 * self.config.z_dim, 2 * self.config.z_dim, 1)
        self.post_quant_conv = CausalConv3d(self.config.z_dim, self.config.z_dim, 1)
        self.decoder = Decoder(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    # -- the latent normalisation (the only place that knows latents_mean / latents_std) --

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (mean, 1/std) as the official pipeline builds them: the reciprocal in float32, then cast
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean).view(shape)
        inverse_std = 1.0 / torch.tensor(self.config.latents_std).view(shape)
        return mean.to(like.device, like.dtype), inverse_std.to(like.device, like.dtype)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the diffusion model's latents: (z - mean) / std per channel."""
        mean, inverse_std = self._statistics(latents)
        return (latents - mean) * inverse_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`."""
        mean, inverse_std = self._statistics(latents)
        return latents / inverse_std + mean

    # -- encoding --

    def _check_pixels(self, video: torch.Tensor) -> None:
        frames, height, width = video.shape[2:]
        if (frames - 1) % self.config.scale_factor_temporal:
            raise ValueError(f"Wan VAE encode needs 1 + {self.config.scale_factor_temporal}k frames, got {frames}")
        step = self.config.scale_factor_spatial
        if height % step or width % step:
            raise ValueError(f"Wan VAE encode needs height and width multiples of {step}, got {height}x{width}")

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, 1+4k, H, W] in [-1, 1] -> posterior (mean, log-variance), each [B, z, 1+k, H/16, W/16], raw."""
        self._check_pixels(video)
        folded = patchify(video.to(self.dtype), self.config.patch_size)
        cache: ConvCache = {}
        # frame 0 is its own step, then one step per group of scale_factor_temporal frames
        bounds = [0, *range(1, folded.shape[2] + 1, self.config.scale_factor_temporal)]
        moments = torch.cat([self.encoder(folded[:, :, start:end], cache) for start, end in zip(bounds, bounds[1:])], 2)
        mean, logvar = self.quant_conv(moments).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @torch.no_grad()
    def sample(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A raw posterior sample mean + std * noise; the noise is drawn with `generator` in the VAE's dtype."""
        mean, logvar = self.encode(video)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[1, 3, 1, H, W] in [-1, 1] -> the normalised posterior sample [1, z, 1, H/16, W/16] in float32:
        the image-to-video condition (latent 0)."""
        return self.normalize(self.sample(image, generator).float())

    # -- decoding --

    def stream_decoder(self) -> WanStreamDecoder:
        return WanStreamDecoder(self)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised [B, z, n, h, w] -> video [B, 3, 1+4(n-1), 16h, 16w] in [-1, 1]."""
        return self.stream_decoder().decode_next(latents)


class WanStreamDecoder:
    """Decodes normalised latents in order, a few at a time; the outputs joined equal `decode_latents` of all.

    Holds the causal caches of one video: the first latent ever given decodes to 1 frame, every later one
    to `scale_factor_temporal` frames.
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.cache: ConvCache = {}
        self.latents_done = 0

    @torch.no_grad()
    def decode_next(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised [B, z, t, h, w] (usually t = 1) -> pixels [B, 3, frames, 16h, 16w] in [-1, 1]."""
        vae = self.vae
        raw = vae.post_quant_conv(vae.denormalize(latents.to(vae.dtype)))
        pieces = []
        for index in range(raw.shape[2]):
            pieces.append(vae.decoder(raw[:, :, index : index + 1], self.cache, first=self.latents_done == 0))
            self.latents_done += 1
        return unpatchify(torch.cat(pieces, dim=2), vae.config.patch_size).clamp(-1.0, 1.0)


def load_wan_vae(vae_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> WanVAE:
    """Load a diffusers-format Wan2.2 `vae/` directory (config.json + diffusion_pytorch_model.safetensors), strictly."""
    from safetensors.torch import load_file

    vae_dir = Path(vae_dir)
    config_path, weights_path = vae_dir / CONFIG_NAME, vae_dir / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing", "download the Wan2.2-TI2V-5B-Diffusers vae/ folder")
    try:
        config = WanVAEConfig.from_json(config_path)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"{config_path}: {error}", "use the vae/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers"
        ) from error
    with torch.device("meta"):
        vae = WanVAE(config)
    state = load_file(str(weights_path), device=str(device))
    report = compare_keys(vae, {name: tuple(tensor.shape) for name, tensor in state.items()})
    if not report.ok:
        raise CheckpointError(
            f"{weights_path} does not fit the Wan2.2 VAE of {config_path.name}: {report.summary(limit=3)}",
            "use the vae/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers (weights and config.json together)",
        )
    vae.load_state_dict({name: tensor.to(dtype) for name, tensor in state.items()}, strict=True, assign=True)
    return vae.eval().requires_grad_(False)


def tiny_wan_vae_config(latent_channels: int = 48) -> WanVAEConfig:
    """The released structure (patch 2, three residual downsampling stages, temporal [F, T, T]) with narrow
    stages and `latent_channels` latent channels (48 as released; the released statistics of the first ones)."""
    return WanVAEConfig(
        base_dim=8,
        decoder_base_dim=8,
        num_res_blocks=1,
        z_dim=latent_channels,
        latents_mean=RELEASED_LATENTS_MEAN[:latent_channels],
        latents_std=RELEASED_LATENTS_STD[:latent_channels],
    )


# the golden tiny VAE (tests/golden/wan_vae_*)
TINY_WAN_VAE_CONFIG = tiny_wan_vae_config()


def write_tiny_wan_vae(vae_dir: str | Path, seed: int = 0, latent_channels: int = 48, scale: float = 0.1) -> Path:
    """Write a tiny random Wan2.2 VAE (`tiny_wan_vae_config(latent_channels)`) as
    `vae_dir/{config.json, diffusion_pytorch_model.safetensors}`.

    Weights are `randn(shape) * scale` from one seeded CPU generator in parameter-registration order (the
    golden tiny VAE's recipe). Returns `vae_dir`.
    """
    from safetensors.torch import save_file

    config = tiny_wan_vae_config(latent_channels)
    with torch.device("meta"):
        shapes = [(name, parameter.shape) for name, parameter in WanVAE(config).named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) * scale for name, shape in shapes}
    vae_dir = Path(vae_dir)
    vae_dir.mkdir(parents=True, exist_ok=True)
    (vae_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(state, str(vae_dir / WEIGHTS_NAME))
    return vae_dir
