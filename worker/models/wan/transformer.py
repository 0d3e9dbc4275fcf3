"""WorldPlay's WAN-5B "lite" transformer: the Wan2.2-TI2V-5B DiT with WorldPlay's action and camera control.

Single-file model whose parameter names equal the official ones (diffusers' `WanTransformer3DModel` plus
WorldPlay's `add_discrete_action_parameters`), so the released checkpoints load with strict=True. Facts and
traps: docs/engine-wan.md. Over the Wan2.2 DiT, WorldPlay adds:

- `condition_embedder.action_embedder`: the action id (0..80) goes through the timestep sinusoid and its
  own MLP and is added to the latent's time embedding; timesteps, actions and therefore all adaLN
  modulation are per latent, which lets clean context latents (t = 14) and a noisy chunk share a pass;
- a camera branch in every self-attention: PRoPE (`CameraProjection`, the same projective transform as
  the HunyuanVideo family) on the *un-roped* q/k/v, attended in the same batch as the RoPE branch, with
  its own output layer `attn1.to_out_prope.0`; the two outputs are summed.

Autoregressive use: `forward_context` runs the n selected clean context latents at RoPE time positions
0..n-1 and returns their per-layer keys/values (`WanKVCache`, RoPE and camera halves); `forward_chunk` runs
a chunk at positions n..n+T-1 attending to [cache, itself]. The text side (512 UMT5 rows, no mask) is
projected once per video into per-layer cross-attention keys/values (`encode_text`).

Tensor layout inside the blocks: tokens [B, T, S, C] (T latents of S = h'·w' tokens) so per-latent
modulation and cameras broadcast; attention works on [B, H, L, D] through the model's attention processor
(worker.models.attention). Sequence parallel (`set_attention_processor(UlyssesAttention(...))`, as for the
HunyuanVideo model) shards every latent's tokens over the ranks with the processor's `shard_frames`; the
self-attention moves q/k/v through its image hooks (the context K/V are cached in the attention layout, so
a cache built under a processor serves only it), the cross-attention needs none (each token attends to the
whole text on its own rank), and `gather_frames` joins the tokens before the output layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.models.attention import AttentionProcessor, resolve_backend
from worker.models.checkpoint import (
    CheckpointError,
    LoadReport,
    SafetensorsCheckpoint,
    compare_keys,
    load_weights,
    resolve_weight_files,
)
from worker.models.transformer import (
    CameraProjection,
    RMSNorm,
    RotaryEmbedding,
    TransformerConfigError,
    join_key_masks,
    per_frame,
    timestep_embedding,
    to_heads_first,
)
from worldplay_cli.contract import layout, variants

CONFIG_NAME = layout.CONFIG_NAME
WEIGHTS_NAME = layout.WEIGHTS_NAME
CLASS_NAME = "WanTransformer3DModel"
# The distilled checkpoint is a training state: its weights are `["generator"]`, keys wrapped by the
# trainer (`model.` then `_fsdp_wrapped_module.`), which the official loader strips before a strict load.
DISTILLED_CHECKPOINT_NAME = variants.get("wan-distilled").checkpoint_name
GENERATOR_KEY = "generator"
WRAPPER_PREFIXES = ("model.", "_fsdp_wrapped_module.")
# RoPE frequencies: theta is hard-coded in the official class (not a config key).
ROPE_THETA = 10000.0
# Six adaLN vectors per block (shift, scale, gate of self-attention; shift, scale, gate of the FFN).
BLOCK_MODULATIONS = 6
# config.json keys that select code paths: they must hold the values of the released architecture.
REQUIRED_VALUES = {
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "image_dim": None,
    "added_kv_proj_dim": None,
    "pos_embed_seq_len": None,
}


@dataclass(frozen=True)
class WanConfig:
    """Architecture; defaults are the released WAN-5B WorldPlay transformer (`wan_transformer/config.json`,
    Wan2.2-TI2V-5B: 24 heads x 128, 30 layers). The official class's own defaults are the 14B values."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    in_channels: int = 48
    out_channels: int = 48
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 14336
    num_layers: int = 30
    eps: float = 1e-6
    rope_max_seq_len: int = 1024

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            # timesteps, actions and cameras are per latent, so a token cannot span latents
            raise TransformerConfigError(f"patch_size {list(self.patch_size)} must be [1, ph, pw]")
        head_dim = self.attention_head_dim
        if head_dim % 4:
            raise TransformerConfigError(f"attention_head_dim {head_dim} must be a multiple of 4 for PRoPE")
        if (head_dim // 3) % 2 or 2 * (head_dim // 6) != head_dim // 3:
            # the official RoPE builds its h/w frequencies 2*(D//6) wide and splits them D//3 wide
            raise TransformerConfigError(f"attention_head_dim {head_dim}: D//3 must be even for the 3-D RoPE")
        if self.freq_dim % 2:
            raise TransformerConfigError(f"freq_dim {self.freq_dim} must be even")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def rope_axes_dims(self) -> tuple[int, int, int]:
        """Head-dim split of the 3-D RoPE: (time, height, width)."""
        spatial = self.attention_head_dim // 3
        return (self.attention_head_dim - 2 * spatial, spatial, spatial)

    @classmethod
    def tiny(cls) -> WanConfig:
        """A small model of the same architecture, for tests and the golden tensors (tools/make_wan_golden.py)."""
        return cls(
            num_attention_heads=2,
            attention_head_dim=24,
            in_channels=8,
            out_channels=8,
            text_dim=16,
            freq_dim=32,
            ffn_dim=96,
            num_layers=2,
        )

    @classmethod
    def from_diffusers_dict(cls, data: dict[str, Any]) -> WanConfig:
        """A diffusers `config.json` (class WanTransformer3DModel): sizing keys are read, code-path keys must
        hold the released values, `_`-prefixed bookkeeping is ignored, anything else is an error."""
        known = {field.name for field in fields(cls)}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in data.items():
            if key.startswith("_"):
                continue
            if key in known:
                values[key] = value
            elif key in REQUIRED_VALUES:
                if value != REQUIRED_VALUES[key]:
                    problems.append(f"{key}={value!r} (the WAN-5B WorldPlay model needs {REQUIRED_VALUES[key]!r})")
            else:
                problems.append(f"unknown key {key!r}")
        if problems:
            raise TransformerConfigError("unsupported WAN transformer config: " + "; ".join(problems))
        if values.get("out_channels") is None and "in_channels" in values:
            values["out_channels"] = values["in_channels"]
        return cls(**values)

    def to_diffusers_dict(self) -> dict[str, Any]:
        """The diffusers `config.json` content for this architecture."""
        data: dict[str, Any] = {"_class_name": CLASS_NAME, **REQUIRED_VALUES}
        data.update({field.name: getattr(self, field.name) for field in fields(self)})
        data["patch_size"] = list(self.patch_size)
        return dict(sorted(data.items()))

    @classmethod
    def from_json(cls, path: str | Path) -> WanConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TransformerConfigError(f"cannot read WAN transformer config {path}: {error}") from error
        if not isinstance(data, dict):
            raise TransformerConfigError(f"WAN transformer config {path} is not a JSON object")
        return cls.from_diffusers_dict(data)


# ---------------------------------------------------------------------------------------------------
# What the passes keep


@dataclass(frozen=True)
class WanTextContext:
    """The prompt as every block's cross-attention sees it: per-layer keys (after `norm_k`) and values
    [B, H, L, D]. They depend on the text alone, so one set serves every pass of a video."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class WanKVCache:
    """Per-layer self-attention keys and values of the context latents in the attention layout, [2B, H, N, D]
    in one process ([2B, H/sp, sp·n, D] under sequence parallel): rows [:B] are the RoPE branch (keys after
    RoPE), rows [B:] the camera branch (keys and values after P⁻¹). The `frames` context latents sit at
    RoPE time positions 0..frames-1; a chunk attending to them starts at `frames`."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    frames: int

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0] // 2


# ---------------------------------------------------------------------------------------------------
# Small layers


def fp32_layer_norm(
    x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """LayerNorm over the last dim computed in fp32 (the official norms are fp32 whatever the weights)."""
    weight = None if weight is None else weight.float()
    bias = None if bias is None else bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), weight, bias, eps)


class TwoLayerMLP(nn.Module):
    """Linear, activation, Linear (diffusers' `linear_1`, `linear_2`): the timestep and action MLPs (SiLU
    over sinusoidal features) and the text projection (tanh-GELU over UMT5 states)."""

    def __init__(self, in_features: int, dim: int, activation: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.activation = activation
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x.to(self.linear_1.weight.dtype))))


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class ConditionEmbedder(nn.Module):
    """Per-latent time + action embedding (and its six-way adaLN projection), and the text projection."""

    def __init__(self, config: WanConfig):
        super().__init__()
        dim = config.inner_dim
        self.freq_dim = config.freq_dim
        self.time_embedder = TwoLayerMLP(config.freq_dim, dim, F.silu)
        self.time_proj = nn.Linear(dim, BLOCK_MODULATIONS * dim)
        self.text_embedder = TwoLayerMLP(config.text_dim, dim, tanh_gelu)
        self.action_embedder = TwoLayerMLP(config.freq_dim, dim, F.silu)

    def forward(self, timestep: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep, action [B, T] float -> time embedding [B, T, C] and block modulation [B, T, 6, C]."""
        batch, frames = timestep.shape
        time = self.time_embedder(timestep_embedding(timestep.reshape(-1), self.freq_dim))
        temb = time + self.action_embedder(timestep_embedding(action.reshape(-1), self.freq_dim))
        modulation = self.time_proj(F.silu(temb)).unflatten(-1, (BLOCK_MODULATIONS, -1))
        return temb.view(batch, frames, -1), modulation.view(batch, frames, BLOCK_MODULATIONS, -1)


class WanRotaryEmbedding(RotaryEmbedding):
    """3-D RoPE of the Wan DiT: head dim split (time, height, width) = (D − 2⌊D/3⌋, ⌊D/3⌋, ⌊D/3⌋), theta
    10000, interleaved pairs. The angles are computed in fp64 and rounded to fp32, as the official table."""

    def __init__(self, config: WanConfig, time_positions: torch.Tensor, height: int, width: int):
        longest = max(int(time_positions.max()) + 1, height, width)
        if longest > config.rope_max_seq_len:
            raise ValueError(f"RoPE positions reach {longest}, beyond the model's {config.rope_max_seq_len}")
        grids = (time_positions.to(torch.float64), torch.arange(height), torch.arange(width))
        cos_axes, sin_axes = [], []
        for positions, dim in zip(grids, config.rope_axes_dims):
            frequencies = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
            angles = torch.outer(positions.to(torch.float64), frequencies)
            cos_axes.append(angles.cos().repeat_interleave(2, dim=1).float())
            sin_axes.append(angles.sin().repeat_interleave(2, dim=1).float())
        frames = len(time_positions)
        self.cos = self._grid(cos_axes, frames, height, width)
        self.sin = self._grid(sin_axes, frames, height, width)


class WanAttention(nn.Module):
    """Attention with RMS-normalised q/k across all heads (`norm_q`, `norm_k` over the full width)."""

    def __init__(self, config: WanConfig, camera_branch: bool):
        super().__init__()
        dim = config.inner_dim
        self.num_heads = config.num_attention_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=config.eps)
        self.norm_k = RMSNorm(dim, eps=config.eps)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        if camera_branch:
            self.to_out_prope = nn.ModuleList([nn.Linear(dim, dim)])

    def key_value(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values [B, H, L, D] of the projected text [B, L, C]."""
        heads = (self.num_heads, -1)
        key = self.norm_k(self.to_k(context)).unflatten(-1, heads)
        value = self.to_v(context).unflatten(-1, heads)
        return to_heads_first(key), to_heads_first(value)

    def cross_attention(
        self, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention: AttentionProcessor
    ) -> torch.Tensor:
        """x [B, T, S, C] attends to the text keys/values (all rows, no mask). Every rank holds the whole
        text, so this rank's tokens attend with all heads where they are: no token exchange."""
        query = self.norm_q(self.to_q(x)).unflatten(-1, (self.num_heads, -1))
        attended = attention(to_heads_first(query), key, value)
        return self.to_out[0](attended.transpose(1, 2).reshape(x.shape))

    def self_attention(
        self,
        x: torch.Tensor,
        rope: WanRotaryEmbedding,
        camera: CameraProjection,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        attention: AttentionProcessor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Both branches in one batch: RoPE on the normalised q/k, PRoPE on the same un-roped q/k/v.

        x [B, T, S, C] (this rank's tokens); `past` the cache's keys/values to attend to before x's own, in
        the attention layout. Returns the summed branch outputs [B, T, S, C] and x's own keys/values in the
        attention layout (what a cache keeps)."""
        heads = (self.num_heads, -1)
        query = self.norm_q(self.to_q(x)).unflatten(-1, heads)
        key = self.norm_k(self.to_k(x)).unflatten(-1, heads)
        value = self.to_v(x).unflatten(-1, heads)
        queries = torch.cat([to_heads_first(rope.apply(query)), to_heads_first(camera.query(query))])
        keys = torch.cat([to_heads_first(rope.apply(key)), to_heads_first(camera.key_value(key))])
        values = torch.cat([to_heads_first(value), to_heads_first(camera.key_value(value))])
        queries, keys, values = attention.image_to_attention(queries, keys, values)
        own = (keys, values)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        # the padding tokens of a sequence-parallel split are no keys (of the cache's part nor of x's own)
        lengths = [own[0].shape[2]] if past is None else [past[0].shape[2], own[0].shape[2]]
        masks = [attention.image_key_mask(length, x.device) for length in lengths]
        key_mask = join_key_masks(masks, lengths, keys.shape[0])
        attended = attention.image_from_attention(attention(queries, keys, values, key_mask))
        # [2B, H, T·S, D] -> [2B, T, S, H, D]
        attended = attended.transpose(1, 2).unflatten(1, x.shape[1:3])
        rope_rows, camera_rows = attended.chunk(2)
        out = self.to_out[0](rope_rows.flatten(-2)) + self.to_out_prope[0](camera.output(camera_rows).flatten(-2))
        return out, own


class GELUProjection(nn.Module):
    """Linear then tanh-GELU (diffusers' `GELU` activation module, whose Linear is `proj`)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh_gelu(self.proj(x))


class FeedForward(nn.Module):
    """GELU projection, (dropout slot), Linear: diffusers' names `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(GELUProjection(dim, hidden_dim), nn.Identity(), nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WanBlock(nn.Module):
    """Self-attention (two branches), cross-attention to the text, FFN; adaLN per latent."""

    def __init__(self, config: WanConfig):
        super().__init__()
        dim = config.inner_dim
        self.eps = config.eps
        self.scale_shift_table = nn.Parameter(torch.zeros(1, BLOCK_MODULATIONS, dim))
        self.attn1 = WanAttention(config, camera_branch=True)
        self.attn2 = WanAttention(config, camera_branch=False)
        self.norm2 = nn.LayerNorm(dim, eps=config.eps)
        self.ffn = FeedForward(dim, config.ffn_dim)

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        text: tuple[torch.Tensor, torch.Tensor],
        rope: WanRotaryEmbedding,
        camera: CameraProjection,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        attention: AttentionProcessor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, S, C], modulation [B, T, 6, C]; returns x and its own self-attention keys/values."""
        # [B, T, 1, C] each, broadcasting over a latent's tokens; fp32 like the official table sum
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (self.scale_shift_table + modulation.float()).split(
            1, dim=2
        )
        normed = (fp32_layer_norm(x, self.eps) * (1 + scale) + shift).type_as(x)
        attended, own = self.attn1.self_attention(normed, rope, camera, past, attention)
        x = (x.float() + attended * gate).type_as(x)
        normed = fp32_layer_norm(x, self.eps, self.norm2.weight, self.norm2.bias).type_as(x)
        x = x + self.attn2.cross_attention(normed, *text, attention)
        normed = (fp32_layer_norm(x, self.eps) * (1 + ffn_scale) + ffn_shift).type_as(x)
        x = (x.float() + self.ffn(normed).float() * ffn_gate).type_as(x)
        return x, own


# ---------------------------------------------------------------------------------------------------
# The model


class WanWorldPlayTransformer(nn.Module):
    def __init__(self, config: WanConfig | None = None, attention_backend: str = "auto"):
        super().__init__()
        self.config = config = config or WanConfig()
        dim = config.inner_dim
        self.attention_processor = AttentionProcessor(attention_backend)
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, config.patch_size, stride=config.patch_size)
        self.condition_embedder = ConditionEmbedder(config)
        self.blocks = nn.ModuleList(WanBlock(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(dim, config.out_channels * math.prod(config.patch_size))
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    def attention_backend_in_use(self) -> str:
        """ "flash", "sdpa" or "sage": what the attention calls of this model run on its device and dtype."""
        return resolve_backend(self.attention_processor.backend, self.device, self.dtype)

    def set_attention_processor(self, processor: AttentionProcessor) -> None:
        """Run attention through `processor` from now on, e.g. `worker.parallel.ulysses.UlyssesAttention` to split
        the tokens of every pass over a process group."""
        processor.check_heads(self.config.num_attention_heads)
        self.attention_processor = processor

    def encode_text(self, text_states: torch.Tensor) -> WanTextContext:
        """UMT5 states [B, L, text_dim] (the official 512 rows, padding rows zero) -> every block's
        cross-attention keys/values."""
        context = self.condition_embedder.text_embedder(text_states.to(self.device, self.dtype))
        pairs = [block.attn2.key_value(context) for block in self.blocks]
        return WanTextContext(tuple(key for key, _ in pairs), tuple(value for _, value in pairs))

    def forward_context(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        text: WanTextContext,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
    ) -> WanKVCache:
        """The n clean context latents [B, C, n, h, w] at RoPE time 0..n-1, attending to themselves;
        returns their per-layer keys/values (the final layer is skipped: nothing reads its output)."""
        _, keys, values = self._pass(latents, timestep, text, viewmats, intrinsics, action, None, keep_kv=True)
        return WanKVCache(keys, values, latents.shape[2])

    def forward_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        text: WanTextContext,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: WanKVCache | None = None,
    ) -> torch.Tensor:
        """Velocity [B, out_channels, T, h, w] for the latents [B, C, T, h, w] at RoPE time n..n+T-1 after
        the cache's n context latents (0.. without a cache), attending to [cache, themselves].

        timestep: a float, [B] or [B, T]; viewmats [B, T, 4, 4] world-to-camera, intrinsics [B, T, 3, 3]
        normalised (only fx, fy matter), action [B, T] ids 0..80."""
        out, _, _ = self._pass(latents, timestep, text, viewmats, intrinsics, action, cache, keep_kv=False)
        return out

    def _pass(self, latents, timestep, text: WanTextContext, viewmats, intrinsics, action, cache, keep_kv: bool):
        batch, _, frames, height, width = latents.shape
        _, patch_h, patch_w = self.config.patch_size
        if height % patch_h or width % patch_w:
            raise ValueError(f"latent grid {height}x{width} is not a multiple of the patch {patch_h}x{patch_w}")
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"KV cache holds batch {cache.batch_size}, latents have batch {batch}")
        device, dtype = self.device, self.dtype
        grid = (frames, height // patch_h, width // patch_w)
        # 1. tokens [B, T, S, C], per-latent embeddings, RoPE after the cached latents, cameras
        x = self.patch_embedding(latents.to(device, dtype)).permute(0, 2, 3, 4, 1).flatten(2, 3)
        timestep = per_frame(timestep, batch, frames, device)
        temb, modulation = self.condition_embedder(timestep, action.to(device).reshape(batch, frames).float())
        temb, modulation = temb.to(dtype), modulation.to(dtype)
        offset = 0 if cache is None else cache.frames
        rope = WanRotaryEmbedding(self.config, torch.arange(offset, offset + frames), grid[1], grid[2]).to(device)
        camera = CameraProjection(viewmats.to(device), intrinsics.to(device), dtype)
        # this rank's share of every latent's tokens, and the processor that knows the split
        x, rope, attention = self.attention_processor.shard_frames(x, rope)
        # 2. the blocks
        keys, values = [], []
        for index, block in enumerate(self.blocks):
            past = None if cache is None else (cache.keys[index], cache.values[index])
            text_kv = (text.keys[index], text.values[index])
            x, (key, value) = block(x, modulation, text_kv, rope, camera, past, attention)
            if keep_kv:
                keys.append(key)
                values.append(value)
        if keep_kv:
            return None, tuple(keys), tuple(values)
        return self._final(attention.gather_frames(x), temb, grid), (), ()

    def _final(self, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Output norm with per-latent shift/scale, projection, unpatchify -> [B, out_channels, T, h, w]."""
        shift, scale = (self.scale_shift_table + temb[:, :, None]).split(1, dim=2)
        x = (fp32_layer_norm(x, self.config.eps) * (1 + scale) + shift).type_as(x)
        out = self.proj_out(x)
        frames, grid_h, grid_w = grid
        _, patch_h, patch_w = self.config.patch_size
        batch, channels = out.shape[0], self.config.out_channels
        # projected features are laid out [ph, pw, C] per token
        out = out.view(batch, frames, grid_h, grid_w, patch_h, patch_w, channels)
        out = out.permute(0, 6, 1, 2, 4, 3, 5)
        return out.reshape(batch, channels, frames, grid_h * patch_h, grid_w * patch_w)


# ---------------------------------------------------------------------------------------------------
# Loading


def load_wan_transformer(
    path: str | Path,
    config: WanConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    attention_backend: str = "auto",
) -> WanWorldPlayTransformer:
    """Build the transformer on the meta device and load its weights strictly, ready for inference.

    `path`: a diffusers-format directory (`wan_transformer/`: config.json + safetensors, single or sharded),
    a safetensors file, or the distilled training checkpoint (`wan_distilled_model/model.pt` or its folder),
    whose `["generator"]` state dict is read with the wrapper prefixes stripped. `config` defaults to the
    directory's config.json, else the released values. Any missing, unexpected or mis-shaped tensor is a
    `CheckpointError` naming them, before a tensor is placed.
    """
    path = Path(path)
    if path.is_dir() and (path / DISTILLED_CHECKPOINT_NAME).is_file() and not (path / CONFIG_NAME).is_file():
        path = path / DISTILLED_CHECKPOINT_NAME
    if config is None:
        config_path = path / CONFIG_NAME if path.is_dir() else None
        try:
            config = WanConfig.from_json(config_path) if config_path and config_path.is_file() else WanConfig()
        except TransformerConfigError as error:
            raise CheckpointError(str(error), "use the wan_transformer/ folder of tencent/HY-WorldPlay") from error
    with torch.device("meta"):
        model = WanWorldPlayTransformer(config, attention_backend=attention_backend)
    device = torch.device(device)
    if path.is_file() and path.suffix != ".safetensors" and not path.name.endswith(".index.json"):
        state = read_generator_state(path)
        _check(model, {name: tuple(tensor.shape) for name, tensor in state.items()}, str(path))
        # cast tensor by tensor from the memory-mapped file, so the weights never exist twice
        placed = {name: state.pop(name).to(device=device, dtype=dtype) for name in list(state)}
        model.load_state_dict(placed, strict=True, assign=True)
    else:
        files = resolve_weight_files(path)
        with SafetensorsCheckpoint(files) as reader:
            _check(model, reader.shapes, str(path))
        load_weights(model, files, dtype, device, strict=True)
    return model.eval().requires_grad_(False)


def read_generator_state(path: Path) -> dict[str, torch.Tensor]:
    """The distilled checkpoint's weights with the trainer's wrapper prefixes stripped (memory-mapped)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a file it cannot read
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({error})",
            "the file is truncated or corrupt; delete it and download wan_distilled_model/model.pt again",
        ) from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(GENERATOR_KEY), dict):
        raise CheckpointError(
            f"{path} has no {GENERATOR_KEY!r} state dict", "pass wan_distilled_model/model.pt of tencent/HY-WorldPlay"
        )
    return {strip_wrappers(name): tensor for name, tensor in checkpoint[GENERATOR_KEY].items()}


def strip_wrappers(name: str) -> str:
    """`model.` then `_fsdp_wrapped_module.`, each removed when the key starts with it (the official order)."""
    for prefix in WRAPPER_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def is_worldplay_addition(name: str) -> bool:
    """Parameters WorldPlay adds to the Wan2.2 DiT (absent from base Wan2.2 weights)."""
    return name.startswith("condition_embedder.action_embedder.") or ".attn1.to_out_prope." in name


def _check(model: nn.Module, shapes: dict[str, tuple[int, ...]], source: str) -> LoadReport:
    report = compare_keys(model, shapes)
    if report.ok:
        return report
    expected = sum(1 for _ in model.parameters())
    present = expected - len(report.missing)
    if report.missing and all(is_worldplay_addition(name) for name in report.missing):
        hint = (
            "these are base Wan2.2 weights without WorldPlay's action and camera parameters; "
            "load wan_distilled_model/model.pt"
        )
    elif present < expected // 2:
        hint = f"only {present} of {expected} expected tensors found: not a WAN-5B WorldPlay transformer checkpoint"
    elif report.mismatched:
        hint = "the checkpoint was trained for another architecture than the config describes"
    else:
        hint = "the checkpoint is incomplete or from another version; re-download it"
    raise CheckpointError(f"{source} does not fit the WAN-5B WorldPlay transformer: {report.summary(limit=3)}", hint)


def write_tiny_wan_transformer(
    transformer_dir: str | Path,
    seed: int = 0,
    config: WanConfig | None = None,
    scale: float = 0.05,
    distilled_path: str | Path | None = None,
) -> Path:
    """Write a tiny random WAN-5B WorldPlay transformer (`WanConfig.tiny()` by default) as
    `transformer_dir/{config.json, diffusion_pytorch_model.safetensors}` with every tensor (the WorldPlay
    additions included) and, given `distilled_path`, the same weights as a distilled training checkpoint
    (`{"generator": ...}` under the trainer's `model._fsdp_wrapped_module.` prefixes, as released).

    Weights are `randn(shape) * scale` from one seeded CPU generator in parameter-registration order.
    Returns `transformer_dir`.
    """
    from safetensors.torch import save_file

    config = config or WanConfig.tiny()
    with torch.device("meta"):
        shapes = [(name, parameter.shape) for name, parameter in WanWorldPlayTransformer(config).named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) * scale for name, shape in shapes}
    transformer_dir = Path(transformer_dir)
    transformer_dir.mkdir(parents=True, exist_ok=True)
    (transformer_dir / CONFIG_NAME).write_text(json.dumps(config.to_diffusers_dict(), indent=2) + "\n")
    save_file(state, str(transformer_dir / WEIGHTS_NAME))
    if distilled_path is not None:
        distilled_path = Path(distilled_path)
        distilled_path.parent.mkdir(parents=True, exist_ok=True)
        wrapped = {"".join(WRAPPER_PREFIXES) + name: tensor for name, tensor in state.items()}
        torch.save({GENERATOR_KEY: wrapped}, distilled_path)
    return transformer_dir
