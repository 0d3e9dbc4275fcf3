"""WorldPlay (HY-World 1.5) diffusion transformer: HunyuanVideo-1.5 480p I2V DiT plus camera/action control.

Single-file model whose parameter names equal the official ones, so the official checkpoints load with
strict=True. Two additions over HunyuanVideo-1.5:

- `action_in`: the discrete action id (0..80) goes through a second sinusoidal timestep MLP and is added
  to the timestep embedding of its latent frame; modulation is therefore per frame, which is what lets
  clean context frames (timestep 14) and noisy frames share one sequence.
- a PRoPE camera branch in every double block: per-frame projection P = lift(K)·w2c applied as Pᵀ to the
  (pre-RoPE) queries, P⁻¹ to keys and values and P to the output, with its own output projection.

Three attention patterns, all of them here:
- bidirectional (`forward_bi`): image tokens and text tokens attend jointly;
- autoregressive: `forward_text` caches per-layer text K/V once per video (text attends to text only, at
  text timestep 0); `forward_context` runs the selected clean context latents and caches their per-layer K/V
  of both branches; `forward_chunk` denoises a chunk attending to [text, context, itself];
- chunk-causal training (`forward_chunk_causal`): a whole window in one pass, latent chunk i attending to
  [text, chunks 0..i], which is what the autoregressive passes show each chunk.
RoPE time positions follow the official "temporal reframing": context frames take 0..n-1, the chunk n...

Tensor layout inside the blocks: image tokens [B, T, S, C] (T latent frames of S tokens each) so that
per-frame modulation and per-frame cameras broadcast without copying; attention works on [B, H, L, D].
Every attention call goes through the model's `AttentionProcessor` (worker.models.attention), which holds
the kernel backend and, when the runtime sets one for sequence parallelism, shards the image tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from worker.models.attention import AttentionProcessor, resolve_backend

# Width of the sinusoidal timestep/action features fed to the embedding MLPs.
FREQUENCY_EMBEDDING_SIZE = 256
# The LLM token refiner has a fixed depth in the released architecture.
REFINER_DEPTH = 2
# cond_type_embedding rows.
COND_TYPE_LLM, COND_TYPE_BYT5, COND_TYPE_VISION = 0, 1, 2
# Graphs a compiled block pass may keep (`compile_blocks`).
RECOMPILE_LIMIT = 64


class TransformerConfigError(ValueError):
    """A transformer config that is malformed or describes an architecture this model does not implement."""


@dataclass(frozen=True)
class WorldPlayTransformerConfig:
    """Architecture of the transformer; defaults are the released `transformer/480p_i2v/config.json`."""

    in_channels: int = 32
    out_channels: int = 32
    hidden_size: int = 2048
    num_heads: int = 16
    num_layers: int = 54
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 1, 1)
    rope_axes_dims: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    text_states_dim: int = 3584
    vision_states_dim: int = 1152
    # The byT5 glyph mapper's widths are hard-coded in the official code (not in config.json); they are
    # fields here so that tiny test models stay small.
    byt5_states_dim: int = 1472
    byt5_hidden_size: int = 2048
    # The 720p super-resolution checkpoint (`transformer/720p_sr_distilled`) is this class too: its input
    # channels come as given (no [noisy | cond | mask] doubling), it embeds a second "meanflow" timestep
    # (`time_r_in`), and it has no action parameters (the official loader adds them to the 480p model only).
    concat_condition: bool = True
    use_meanflow: bool = False
    action_parameters: bool = True

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        object.__setattr__(self, "rope_axes_dims", tuple(self.rope_axes_dims))
        if self.hidden_size % self.num_heads:
            raise TransformerConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if sum(self.rope_axes_dims) != self.head_dim:
            raise TransformerConfigError(
                f"rope_axes_dims {list(self.rope_axes_dims)} must sum to head_dim {self.head_dim}"
            )
        if any(dim % 2 for dim in self.rope_axes_dims):
            raise TransformerConfigError(f"rope_axes_dims {list(self.rope_axes_dims)} must be even")
        if self.head_dim % 4:
            raise TransformerConfigError(f"head_dim {self.head_dim} must be a multiple of 4 for PRoPE")
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            # Timesteps, actions and cameras are per latent frame, so tokens cannot span frames.
            raise TransformerConfigError(f"patch_size {list(self.patch_size)} must be [1, ph, pw]")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldPlayTransformerConfig:
        """Our own format (`to_dict`): exactly our field names, unknown keys rejected."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TransformerConfigError(f"unknown transformer config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        data["rope_axes_dims"] = list(self.rope_axes_dims)
        return data

    @classmethod
    def from_official_dict(cls, data: dict[str, Any]) -> WorldPlayTransformerConfig:
        """The official `config.json` (class HunyuanVideo_1_5_DiffusionTransformer).

        Keys that size the model are mapped, keys that select code paths must hold the values of the
        WorldPlay architecture, runtime-only keys and `_`-prefixed bookkeeping are ignored, and any other key
        is an error (so a typo or a different model does not load silently).
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in data.items():
            if key.startswith("_") or key in OFFICIAL_IGNORED_KEYS:
                continue
            if key in OFFICIAL_FIELD_NAMES:
                if value is not None:
                    values[OFFICIAL_FIELD_NAMES[key]] = value
            elif key in OFFICIAL_REQUIRED_VALUES:
                if value != OFFICIAL_REQUIRED_VALUES[key]:
                    problems.append(f"{key}={value!r} (WorldPlay needs {OFFICIAL_REQUIRED_VALUES[key]!r})")
            elif key in EXTENSION_KEYS:
                values[key] = value
            else:
                problems.append(f"unknown key {key!r}")
        if problems:
            raise TransformerConfigError("unsupported transformer config: " + "; ".join(problems))
        if "out_channels" not in values and "in_channels" in values:
            values["out_channels"] = values["in_channels"]
        return cls(**values)

    def to_official_dict(self) -> dict[str, Any]:
        """The official `config.json` content for this architecture (extension keys only when not default)."""
        ours = self.to_dict()
        data: dict[str, Any] = {"_class_name": "HunyuanVideo_1_5_DiffusionTransformer"}
        data.update({official: ours[field] for official, field in OFFICIAL_FIELD_NAMES.items()})
        data.update(OFFICIAL_REQUIRED_VALUES)
        data.update({"attn_mode": "flash", "attn_param": None, "ideal_resolution": "480p", "ideal_task": "i2v"})
        default = WorldPlayTransformerConfig()
        data.update({key: ours[key] for key in EXTENSION_KEYS if ours[key] != getattr(default, key)})
        return dict(sorted(data.items()))

    @classmethod
    def from_json(cls, path: str | Path) -> WorldPlayTransformerConfig:
        """Read an official-format `config.json`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TransformerConfigError(f"cannot read transformer config {path}: {error}") from error
        if not isinstance(data, dict):
            raise TransformerConfigError(f"transformer config {path} is not a JSON object")
        return cls.from_official_dict(data)


OFFICIAL_FIELD_NAMES = {
    "in_channels": "in_channels",
    "concat_condition": "concat_condition",
    "out_channels": "out_channels",
    "hidden_size": "hidden_size",
    "heads_num": "num_heads",
    "mm_double_blocks_depth": "num_layers",
    "mlp_width_ratio": "mlp_ratio",
    "patch_size": "patch_size",
    "rope_dim_list": "rope_axes_dims",
    "rope_theta": "rope_theta",
    "text_states_dim": "text_states_dim",
    "vision_states_dim": "vision_states_dim",
    "use_meanflow": "use_meanflow",
}
OFFICIAL_REQUIRED_VALUES = {
    "glyph_byT5_v2": True,
    "guidance_embed": False,
    "is_reshape_temporal_channels": False,
    "mlp_act_type": "gelu_tanh",
    "mm_single_blocks_depth": 0,
    "qk_norm": True,
    "qk_norm_type": "rms",
    "qkv_bias": True,
    "text_pool_type": None,
    "text_projection": "single_refiner",
    "text_states_dim_2": None,
    "use_attention_mask": True,
    "use_cond_type_embedding": True,
    "vision_projection": "linear",
}
# Attention kernel choice and the resolution/task the checkpoint was trained for do not change the math.
OFFICIAL_IGNORED_KEYS = frozenset({"attn_mode", "attn_param", "ideal_resolution", "ideal_task"})
EXTENSION_KEYS = ("byt5_states_dim", "byt5_hidden_size")


# ---------------------------------------------------------------------------------------------------
# Inputs and the KV cache


@dataclass(frozen=True)
class PromptEmbeddings:
    """Encoder outputs the transformer turns into its text sequence (batch B).

    llm [B, L, text_states_dim] (Qwen2.5-VL hidden_states[-3], template cropped) with llm_mask [B, L];
    byt5 [B, Lb, byt5_states_dim] with byt5_mask [B, Lb] (all-zero mask when the prompt quotes no text);
    vision [B, Lv, vision_states_dim] SigLIP tokens (all valid), or None.
    """

    llm: torch.Tensor
    llm_mask: torch.Tensor
    byt5: torch.Tensor
    byt5_mask: torch.Tensor
    vision: torch.Tensor | None = None


@dataclass(frozen=True)
class KVCache:
    """Per-layer keys and values the autoregressive passes attend to; nothing else is kept between calls.

    Text part (`forward_text`, once per video and CFG branch): `text_keys[i]`/`text_values[i]` [B, H, L, D]
    (post QK-norm, no RoPE), `text_mask` [B, L] only when prompts in the batch have different lengths.
    Context part (`forward_context`, rebuilt for every chunk): `context_keys[i]`/`context_values[i]`
    [2B, H, N, D], rows [:B] from the RoPE branch (keys after RoPE) and rows [B:] from the PRoPE branch,
    covering `context_frames` latent frames that sit at RoPE time positions 0..context_frames-1. They are
    kept in the attention processor's layout: under sequence parallelism [2B, H/sp, N', D], sharded by heads.
    """

    text_keys: tuple[torch.Tensor, ...]
    text_values: tuple[torch.Tensor, ...]
    text_mask: torch.Tensor | None = None
    context_keys: tuple[torch.Tensor, ...] = ()
    context_values: tuple[torch.Tensor, ...] = ()
    context_frames: int = 0

    @property
    def batch_size(self) -> int:
        return self.text_keys[0].shape[0]

    def with_context(self, keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...], frames: int) -> KVCache:
        return replace(self, context_keys=keys, context_values=values, context_frames=frames)

    def without_context(self) -> KVCache:
        return replace(self, context_keys=(), context_values=(), context_frames=0)

    def layer(self, index: int) -> LayerKV:
        """Layer `index`'s keys and values: what one block reads (a block never sees the layer's number, so a
        compiled block serves every layer with one graph)."""
        if not self.context_frames:
            return LayerKV(self.text_keys[index], self.text_values[index], self.text_mask)
        return LayerKV(
            self.text_keys[index],
            self.text_values[index],
            self.text_mask,
            self.context_keys[index],
            self.context_values[index],
        )


@dataclass(frozen=True)
class LayerKV:
    """One layer of a `KVCache`: text keys/values [B, H, L, D] with their mask, and the context keys/values
    [2B, H, N, D] (None without context)."""

    text_key: torch.Tensor
    text_value: torch.Tensor
    text_mask: torch.Tensor | None = None
    context_key: torch.Tensor | None = None
    context_value: torch.Tensor | None = None


@dataclass(frozen=True)
class AttentionWindow:
    """Attention sink + local window (MatrixGame2's `sink_size` / `local_attn_size`, in latents) for
    unbounded autoregressive rollouts with bounded attention memory.

    A chunk attends to the first `sink_latents` latents (never evicted) and to the latest
    `local_window_latents − sink_latents` latents, itself included: the window spans `local_window_latents`
    with the sink, what MatrixGame2's streaming cache holds (its flex-attention training mask lets a query see
    the sink plus `local` recent latents, one sink more than its own cache keeps; here training sees what
    inference keeps). Training: the chunk-causal pass masks every other
    chunk (`visible_chunks`). Inference: the AR context is rebuilt for every chunk from the latents it
    keeps (`context_latents`), at contiguous RoPE positions like every WorldPlay context ("temporal
    reframing"), so evicting a latent means leaving it out of the next rebuild; the cache never holds more
    than local_window_latents − chunk latents.
    """

    sink_latents: int
    local_window_latents: int

    def __post_init__(self):
        if not 0 <= self.sink_latents < self.local_window_latents:
            raise ValueError(
                f"the attention window needs 0 <= sink_latents < local_window_latents, got {self.sink_latents} "
                f"and {self.local_window_latents}"
            )

    @property
    def recent_latents(self) -> int:
        return self.local_window_latents - self.sink_latents

    def check_chunks(self, chunk_latents: int) -> None:
        if self.sink_latents % chunk_latents or self.local_window_latents % chunk_latents:
            raise ValueError(
                f"sink_latents {self.sink_latents} and local_window_latents {self.local_window_latents} must be "
                f"multiples of the {chunk_latents}-latent chunk"
            )

    def context_latents(self, chunk_start: int, chunk_latents: int) -> list[int]:
        """The earlier latents the chunk [chunk_start, chunk_start + chunk_latents) is conditioned on."""
        sink = range(min(self.sink_latents, chunk_start))
        recent = range(max(self.sink_latents, chunk_start + chunk_latents - self.recent_latents), chunk_start)
        return [*sink, *recent]

    def visible_chunks(self, index: int, chunk_latents: int) -> list[int]:
        """The chunks chunk `index` attends to in a chunk-causal pass (itself included)."""
        end = (index + 1) * chunk_latents
        return [
            chunk
            for chunk in range(index + 1)
            if (chunk + 1) * chunk_latents <= self.sink_latents or chunk * chunk_latents >= end - self.recent_latents
        ]


# ---------------------------------------------------------------------------------------------------
# Small layers


def timestep_embedding(timesteps: torch.Tensor, dim: int = FREQUENCY_EMBEDDING_SIZE, max_period: float = 10000.0):
    """Sinusoidal features of (possibly fractional) timesteps [N] -> [N, dim], ordered [cos | sin]."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps[:, None].float() * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features followed by Linear-SiLU-Linear (`mlp.0`, `mlp.2`); also embeds action ids."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(FREQUENCY_EMBEDDING_SIZE, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(timesteps).to(self.mlp[0].weight.dtype))


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in fp32, with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, activation: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = activation
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Modulation(nn.Module):
    """SiLU then Linear to `factor` vectors of width hidden_size (shift/scale/gate sets)."""

    def __init__(self, hidden_size: int, factor: int):
        super().__init__()
        self.factor = factor
        self.linear = nn.Linear(hidden_size, factor * hidden_size)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(vec)).chunk(self.factor, dim=-1)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """The blocks' LayerNorm: no affine parameters, eps 1e-6."""
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


class PatchEmbed(nn.Module):
    """[noisy | cond | mask] latent channels (the SR model: its channels as given) -> tokens with a Conv3d
    whose kernel equals its stride."""

    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        in_channels = 2 * config.in_channels + 1 if config.concat_condition else config.in_channels
        self.proj = nn.Conv3d(in_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C_in, T, H, W] -> [B, T, H', W', C] -> [B, T, S, C], a tensor of its own (not a view) like every
        # later block's input: the guards of a block compiled with dynamic shapes check their input's view base
        tokens = self.proj(x).permute(0, 2, 3, 4, 1)
        return tokens.flatten(2, 3).contiguous()


class ByT5Mapper(nn.Module):
    """byT5 glyph-encoder states -> hidden size: LayerNorm, then three Linears with exact GELU between."""

    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.byt5_states_dim)
        self.fc1 = nn.Linear(config.byt5_states_dim, config.byt5_hidden_size)
        self.fc2 = nn.Linear(config.byt5_hidden_size, config.byt5_hidden_size)
        self.fc3 = nn.Linear(config.byt5_hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(self.layernorm(x)))
        return self.fc3(F.gelu(self.fc2(x)))


class VisionProjection(nn.Module):
    """SigLIP tokens -> hidden size (`proj.0..4`: LayerNorm, Linear, GELU, Linear, LayerNorm)."""

    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        dim = config.vision_states_dim
        self.proj = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Linear(dim, config.hidden_size),
            nn.LayerNorm(config.hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PooledTextProjection(nn.Module):
    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TokenRefinerBlock(nn.Module):
    """Self-attention + MLP over the LLM tokens; its adaLN only produces gates (no shift/scale)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.self_attn_qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.self_attn_proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = FeedForward(hidden_size, int(hidden_size * mlp_ratio), nn.SiLU())
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor, key_mask: torch.Tensor | None, attention: AttentionProcessor
    ):
        batch, length, hidden = x.shape
        gate_attention, gate_mlp = self.adaLN_modulation(condition).unsqueeze(1).chunk(2, dim=-1)
        # qkv features are laid out [3, heads, head_dim]
        qkv = self.self_attn_qkv(self.norm1(x)).view(batch, length, 3, self.num_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = attention(query, key, value, key_mask).transpose(1, 2).reshape(batch, length, hidden)
        x = x + gate_attention * self.self_attn_proj(attended)
        return x + gate_mlp * self.mlp(self.norm2(x))


class TokenRefinerStack(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(TokenRefinerBlock(hidden_size, num_heads, mlp_ratio) for _ in range(REFINER_DEPTH))


class SingleTokenRefiner(nn.Module):
    """`txt_in`: projects LLM states and refines them, conditioned on the timestep and the mean token."""

    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        self.input_embedder = nn.Linear(config.text_states_dim, config.hidden_size)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.c_embedder = PooledTextProjection(config.text_states_dim, config.hidden_size)
        self.individual_token_refiner = TokenRefinerStack(config.hidden_size, config.num_heads, config.mlp_ratio)

    def forward(
        self, states: torch.Tensor, timestep: torch.Tensor, mask: torch.Tensor, attention: AttentionProcessor
    ) -> torch.Tensor:
        # 1. condition = timestep embedding + projection of the mean over valid tokens
        weights = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1)
        condition = self.t_embedder(timestep) + self.c_embedder(pooled)
        # 2. refine; the first token always counts as valid so no row is left without keys
        key_mask = mask.clone()
        key_mask[:, 0] = True
        key_mask = None if bool(key_mask.all()) else key_mask
        x = self.input_embedder(states)
        for block in self.individual_token_refiner.blocks:
            x = block(x, condition, key_mask, attention)
        return x


class FinalLayer(nn.Module):
    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        patch_volume = math.prod(config.patch_size)
        self.linear = nn.Linear(config.hidden_size, patch_volume * config.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.hidden_size, 2 * config.hidden_size))

    def forward(self, x: torch.Tensor, frame_vec: torch.Tensor) -> torch.Tensor:
        # x [B, T, S, C], frame_vec [B, T, C]; modulation order is shift, scale
        shift, scale = self.adaLN_modulation(frame_vec).unsqueeze(2).chunk(2, dim=-1)
        return self.linear(layer_norm(x) * (1 + scale) + shift)


# ---------------------------------------------------------------------------------------------------
# Positional encodings


class RotaryEmbedding:
    """3-D RoPE for image tokens: head_dim split [t | h | w], interleaved pairs, frequencies 1/theta^(2j/d).

    `time_positions` are the RoPE time indices of the frames (temporal reframing decides them).
    """

    def __init__(self, config: WorldPlayTransformerConfig, time_positions: torch.Tensor, height: int, width: int):
        grids = (time_positions.float(), torch.arange(height).float(), torch.arange(width).float())
        cos_axes, sin_axes = [], []
        for positions, dim in zip(grids, config.rope_axes_dims):
            frequencies = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
            angles = torch.outer(positions.to(frequencies.device), frequencies)
            cos_axes.append(angles.cos().repeat_interleave(2, dim=1))
            sin_axes.append(angles.sin().repeat_interleave(2, dim=1))
        frames = len(time_positions)
        self.cos = self._grid(cos_axes, frames, height, width)
        self.sin = self._grid(sin_axes, frames, height, width)

    @staticmethod
    def _grid(per_axis: list[torch.Tensor], frames: int, height: int, width: int) -> torch.Tensor:
        # -> [T, H*W, 1, D], broadcasting over batch and heads of [B, T, S, heads, D]
        t_part, h_part, w_part = per_axis
        grid = torch.cat(
            [
                t_part[:, None, None].expand(frames, height, width, -1),
                h_part[None, :, None].expand(frames, height, width, -1),
                w_part[None, None, :].expand(frames, height, width, -1),
            ],
            dim=-1,
        )
        return grid.reshape(frames, height * width, 1, -1)

    def to(self, device: torch.device) -> RotaryEmbedding:
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        pairs = x32.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return (x32 * self.cos + rotated * self.sin).type_as(x)


class CameraProjection:
    """PRoPE: per-frame P = lift(K')·w2c with K' = diag(fx, fy, 1) (principal point dropped).

    Every 4-dim group of a head vector is transformed: Pᵀ for queries, P⁻¹ for keys and values and P for
    the attention output, so a query of frame i meets a key of frame j as qᵀ·Pᵢ·Pⱼ⁻¹·k: the relative
    projection between the two cameras, whatever the world frame.
    """

    def __init__(self, viewmats: torch.Tensor, intrinsics: torch.Tensor, dtype: torch.dtype):
        # viewmats [B, T, 4, 4] world-to-camera, intrinsics [B, T, 3, 3] normalised
        viewmats = viewmats.float()
        fx, fy = intrinsics[..., 0, 0].float(), intrinsics[..., 1, 1].float()
        ones = torch.ones_like(fx)
        lift_k = torch.diag_embed(torch.stack([fx, fy, ones, ones], dim=-1))
        lift_k_inv = torch.diag_embed(torch.stack([1 / fx, 1 / fy, ones, ones], dim=-1))
        projection = lift_k @ viewmats
        rotation_t = viewmats[..., :3, :3].transpose(-1, -2)
        viewmats_inv = torch.zeros_like(viewmats)
        viewmats_inv[..., :3, :3] = rotation_t
        viewmats_inv[..., :3, 3] = -(rotation_t @ viewmats[..., :3, 3:]).squeeze(-1)
        viewmats_inv[..., 3, 3] = 1.0
        self.projection = projection.to(dtype)
        self.projection_t = projection.transpose(-1, -2).to(dtype)
        self.projection_inv = (viewmats_inv @ lift_k_inv).to(dtype)

    @staticmethod
    def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # matrix [B, T, 4, 4]; x [B, T, S, heads, D] transformed per 4-dim group
        groups = x.unflatten(-1, (-1, 4))
        return torch.einsum("btij,btshgj->btshgi", matrix, groups).flatten(-2)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.projection_t, x)

    def key_value(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.projection_inv, x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.projection, x)


# ---------------------------------------------------------------------------------------------------
# Double-stream block


def to_heads_first(x: torch.Tensor) -> torch.Tensor:
    """[B, T, S, H, D] or [B, L, H, D] -> [B, H, L, D]."""
    return x.flatten(1, -3).transpose(1, 2)


class DoubleStreamBlock(nn.Module):
    """Image and text streams with separate weights; image tokens also get the PRoPE camera branch."""

    def __init__(self, config: WorldPlayTransformerConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_heads
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(hidden, 6))
            setattr(self, f"{stream}_attn_q", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_attn_k", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_attn_v", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_attn_q_norm", RMSNorm(config.head_dim))
            setattr(self, f"{stream}_attn_k_norm", RMSNorm(config.head_dim))
            setattr(self, f"{stream}_attn_proj", nn.Linear(hidden, hidden))
            setattr(self, f"{stream}_mlp", FeedForward(hidden, config.mlp_hidden_size, nn.GELU(approximate="tanh")))
        if config.action_parameters:
            self.img_attn_prope_proj = nn.Linear(hidden, hidden)

    def _qkv(self, stream: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, with_query: bool = True):
        """q (None without `with_query`), k, v [..., H, D] of one stream."""
        modulated = layer_norm(x) * (1 + scale) + shift
        heads = (self.num_heads, -1)
        key = getattr(self, f"{stream}_attn_k")(modulated).unflatten(-1, heads)
        value = getattr(self, f"{stream}_attn_v")(modulated).unflatten(-1, heads)
        key = getattr(self, f"{stream}_attn_k_norm")(key).to(value.dtype)
        if not with_query:
            return None, key, value
        query = getattr(self, f"{stream}_attn_q")(modulated).unflatten(-1, heads)
        query = getattr(self, f"{stream}_attn_q_norm")(query).to(value.dtype)
        return query, key, value

    def image_qkv(
        self,
        img: torch.Tensor,
        modulation: tuple[torch.Tensor, ...],
        rope: RotaryEmbedding,
        camera: CameraProjection | None,
    ):
        """Both branches' q, k, v [B, T, S, H, D]: RoPE on the post-norm q/k, PRoPE on the same pre-RoPE q/k/v
        (no PRoPE branch, None, without a camera: the SR pass)."""
        shift, scale = modulation[0], modulation[1]
        query, key, value = self._qkv("img", img, shift, scale)
        rope_branch = (rope.apply(query), rope.apply(key), value)
        if camera is None:
            return rope_branch, None
        prope_branch = (camera.query(query), camera.key_value(key), camera.key_value(value))
        return rope_branch, prope_branch

    def text_qkv(self, txt: torch.Tensor, modulation: tuple[torch.Tensor, ...], with_query: bool = True):
        return self._qkv("txt", txt, modulation[0], modulation[1], with_query)

    def finish_image(self, img, attended, attended_prope, modulation, camera: CameraProjection | None):
        """Residual updates of the image stream from both branches' attention outputs [B, T, S, H, D] (the
        RoPE branch's alone when `attended_prope` is None)."""
        gate_attention, shift_mlp, scale_mlp, gate_mlp = modulation[2:]
        projected = self.img_attn_proj(attended.flatten(-2))
        if attended_prope is not None:
            projected = projected + self.img_attn_prope_proj(camera.output(attended_prope).flatten(-2))
        img = img + gate_attention * projected
        return img + gate_mlp * self.img_mlp(layer_norm(img) * (1 + scale_mlp) + shift_mlp)

    def finish_text(self, txt, attended, modulation):
        gate_attention, shift_mlp, scale_mlp, gate_mlp = modulation[2:]
        txt = txt + gate_attention * self.txt_attn_proj(attended.flatten(-2))
        return txt + gate_mlp * self.txt_mlp(layer_norm(txt) * (1 + scale_mlp) + shift_mlp)

    def forward_joint(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        frame_vec: torch.Tensor,
        text_vec: torch.Tensor,
        rope: RotaryEmbedding,
        camera: CameraProjection | None,
        text_mask: torch.Tensor | None,
        attention: AttentionProcessor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One bidirectional layer: image and text attend jointly; returns the updated (img, txt). Without a
        camera there is no PRoPE branch: the official SR block path (`forward_sr`)."""
        img_modulation = tuple(m.unsqueeze(2) for m in self.img_mod(frame_vec))
        txt_modulation = tuple(m.unsqueeze(1) for m in self.txt_mod(text_vec))
        # 1. q/k/v of both streams; the camera branch only exists for image tokens
        (query, key, value), prope_branch = self.image_qkv(img, img_modulation, rope, camera)
        txt_query, txt_key, txt_value = self.text_qkv(txt, txt_modulation)
        # 2. RoPE branch: image and text queries attend to [image, text]
        attended_img, attended_txt = joint_attention(
            attention, (query, key, value), (txt_query, txt_key, txt_value), text_mask
        )
        # 3. PRoPE branch: image queries attend to [camera-transformed image, untransformed text]
        attended_p = None
        if prope_branch is not None:
            attended_p, _ = joint_attention(attention, prope_branch, (None, txt_key, txt_value), text_mask)
        # 4. residual updates
        img = self.finish_image(img, attended_img, attended_p, img_modulation, camera)
        return img, self.finish_text(txt, attended_txt, txt_modulation)

    def forward_image(
        self,
        img: torch.Tensor,
        frame_vec: torch.Tensor,
        rope: RotaryEmbedding,
        camera: CameraProjection,
        layer_cache: LayerKV,
        chunk_frames: int | None,
        keep_kv: bool,
        attention: AttentionProcessor,
        window: AttentionWindow | None = None,
    ):
        """One layer of the image tokens against the cache's layer `layer_cache`, causal by chunk: the frames'
        chunk i (of `chunk_frames` frames; None: all frames are one chunk) attends to [text, cached context,
        chunks 0..i], bidirectionally inside itself; with an attention `window`, to [text, cached context, the sink's chunks, the chunks of
        its local window]. Returns the updated img and, with `keep_kv` (one chunk only), the frames' keys and
        values [2B, H, N, D] in the attention layout (else None, None)."""
        img_modulation = tuple(m.unsqueeze(2) for m in self.img_mod(frame_vec))
        branches = self.image_qkv(img, img_modulation, rope, camera)
        # 1. keys of each batch row: [text, context, chunk 0, chunk 1, ...]; both branches share the text K/V,
        #    so they run as one attention with the PRoPE rows [B:] stacked after the RoPE rows [:B]
        text_key, text_value = (attention.text_to_attention(x) for x in (layer_cache.text_key, layer_cache.text_value))
        key_parts, value_parts = [torch.cat([text_key, text_key])], [torch.cat([text_value, text_value])]
        mask_parts = [None if layer_cache.text_mask is None else layer_cache.text_mask.repeat(2, 1)]
        if layer_cache.context_key is not None:
            key_parts.append(layer_cache.context_key)
            value_parts.append(layer_cache.context_value)
            mask_parts.append(attention.image_key_mask(layer_cache.context_key.shape[2], img.device))
        queries = []
        # one chunk of every frame when chunk_frames is None: no loop over the frame count, which a compiled block
        # would otherwise have to specialise on (one graph per context length)
        chunks = (
            [slice(None)]
            if chunk_frames is None
            else [slice(start, start + chunk_frames) for start in range(0, img.shape[1], chunk_frames)]
        )
        for frames in chunks:
            # q, k, v [2B, H, n, D] of the chunk's tokens in both branches, then into the attention layout; chunk
            # by chunk, so that under sequence parallelism each chunk's gathered tokens stay contiguous
            chunk = [
                torch.cat([to_heads_first(x[:, frames]), to_heads_first(x_p[:, frames])]) for x, x_p in zip(*branches)
            ]
            chunk_query, chunk_key, chunk_value = attention.image_to_attention(*chunk)
            queries.append(chunk_query)
            key_parts.append(chunk_key)
            value_parts.append(chunk_value)
            mask_parts.append(attention.image_key_mask(chunk_key.shape[2], img.device))
        keys, values = torch.cat(key_parts, dim=2), torch.cat(value_parts, dim=2)
        key_mask = join_key_masks(mask_parts, [part.shape[2] for part in key_parts], keys.shape[0])
        # 2. chunk i's keys are a prefix of the sequence, everything up to its own: views, so the keys are held
        #    once for all chunks (and for backward)
        attended = []
        end = keys.shape[2] - sum(chunk_query.shape[2] for chunk_query in queries)
        for index, chunk_query in enumerate(queries):
            end += chunk_query.shape[2]
            if window is None:
                chunk_keys, chunk_values = keys[:, :, :end], values[:, :, :end]
                chunk_mask = None if key_mask is None else key_mask[:, :end]
            else:
                # whole chunk parts, so a sequence-parallel layout inside a chunk never matters
                first = len(key_parts) - len(queries)
                parts = [*range(first), *(first + chunk for chunk in window.visible_chunks(index, chunk_frames))]
                chunk_keys = torch.cat([key_parts[part] for part in parts], dim=2)
                chunk_values = torch.cat([value_parts[part] for part in parts], dim=2)
                lengths = [key_parts[part].shape[2] for part in parts]
                chunk_mask = join_key_masks([mask_parts[part] for part in parts], lengths, keys.shape[0])
            chunk_attended = attention(chunk_query, chunk_keys, chunk_values, chunk_mask)
            attended.append(attention.image_from_attention(chunk_attended))
        image_shape = branches[0][0].shape
        attended_img, attended_p = (from_heads_first(part, image_shape) for part in torch.cat(attended, dim=2).chunk(2))
        # 3. residual updates
        img = self.finish_image(img, attended_img, attended_p, img_modulation, camera)
        if not keep_kv:
            return img, None, None
        return img, key_parts[-1], value_parts[-1]


def joint_attention(attention: AttentionProcessor, image_qkv, text_qkv, text_mask: torch.Tensor | None):
    """Image queries, and text queries unless `text_qkv[0]` is None, attending to [image, text] keys.

    image q/k/v [B, T, S, H, D] (this rank's tokens), text q/k/v [B, L, H, D] and text_mask [B, L] or None;
    returns the attended image [B, T, S, H, D] and text [B, L, H, D] (None without text queries).
    """
    image_query, image_key, image_value = attention.image_to_attention(*(to_heads_first(x) for x in image_qkv))
    text_query, text_key, text_value = (
        None if x is None else attention.text_to_attention(to_heads_first(x)) for x in text_qkv
    )
    image_len = image_query.shape[2]
    image_mask = attention.image_key_mask(image_len, image_query.device)
    key_mask = join_key_masks([image_mask, text_mask], [image_len, text_key.shape[2]], image_query.shape[0])
    queries = image_query if text_query is None else torch.cat([image_query, text_query], dim=2)
    keys, values = torch.cat([image_key, text_key], dim=2), torch.cat([image_value, text_value], dim=2)
    attended = attention(queries, keys, values, key_mask)
    attended_image = from_heads_first(attention.image_from_attention(attended[:, :, :image_len]), image_qkv[0].shape)
    if text_query is None:
        return attended_image, None
    return attended_image, from_heads_first(
        attention.text_from_attention(attended[:, :, image_len:]), text_qkv[0].shape
    )


def join_key_masks(masks: list[torch.Tensor | None], lengths: list[int], batch: int) -> torch.Tensor | None:
    """One key mask [B, L] from per-part masks ([B, l], [l] or None meaning all valid); None if all valid."""
    if all(mask is None for mask in masks):
        return None
    device = next(mask.device for mask in masks if mask is not None)
    rows = []
    for mask, length in zip(masks, lengths):
        if mask is None:
            mask = torch.ones(length, dtype=torch.bool, device=device)
        rows.append(mask.expand(batch, length))
    return torch.cat(rows, dim=1)


def from_heads_first(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """[B, H, L, D] -> `shape` ([B, T, S, H, D] or [B, L, H, D])."""
    return x.transpose(1, 2).reshape(shape)


# ---------------------------------------------------------------------------------------------------
# The model


class WorldPlayTransformer(nn.Module):
    """The WorldPlay DiT. Build with `WorldPlayTransformer(config)` or load with `worker.models.checkpoint`.

    Inputs shared by the forwards:
    - hidden_states [B, 2*in_channels+1, T, H, W]: [noisy latent | cond latent | mask] channels;
    - timestep: [B, T] per latent frame, [B] or a float (0..1000 scale);
    - viewmats [B, T, 4, 4] world-to-camera, intrinsics [B, T, 3, 3] normalised K, action [B, T] ids 0..80.
      The official pipeline rounds viewmats, intrinsics and actions to bf16 before the model; callers who
      want its numbers do that rounding, this model does not.
    """

    def __init__(self, config: WorldPlayTransformerConfig | None = None, attention_backend: str = "auto"):
        super().__init__()
        self.config = config = config or WorldPlayTransformerConfig()
        self.attention_processor = AttentionProcessor(attention_backend)
        # activation checkpointing per double block (training only; off = plain forward)
        self.gradient_checkpointing = False
        # the torch.compile backend of the blocks' passes (`compile_blocks`), None: eager
        self.compile_backend: str | None = None
        self.byt5_in = ByT5Mapper(config)
        self.img_in = PatchEmbed(config)
        self.vision_in = VisionProjection(config)
        self.txt_in = SingleTokenRefiner(config)
        self.time_in = TimestepEmbedder(config.hidden_size)
        if config.use_meanflow:
            self.time_r_in = TimestepEmbedder(config.hidden_size)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.num_layers))
        self.final_layer = FinalLayer(config)
        self.cond_type_embedding = nn.Embedding(3, config.hidden_size)
        if config.action_parameters:
            # registered last, like the official add_action_parameters(), so the parameter order matches it
            self.action_in = TimestepEmbedder(config.hidden_size)

    @classmethod
    def from_config(
        cls, config: WorldPlayTransformerConfig | dict | str | Path | None = None, **kwargs
    ) -> WorldPlayTransformer:
        """From a config object, our own dict format, or the path of an official `config.json`."""
        if isinstance(config, (str, Path)):
            config = WorldPlayTransformerConfig.from_json(config)
        elif isinstance(config, dict):
            config = WorldPlayTransformerConfig.from_dict(config)
        return cls(config, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.img_in.proj.weight.device

    def attention_backend_in_use(self) -> str:
        """ "flash" or "sdpa": what the attention calls of this model run on its device and dtype."""
        return resolve_backend(self.attention_processor.backend, self.device, self.dtype)

    def set_attention_processor(self, processor: AttentionProcessor) -> None:
        """Run attention through `processor` from now on, e.g. `worker.parallel.ulysses.UlyssesAttention` to split
        the image tokens of every pass over a process group."""
        processor.check_heads(self.config.num_heads)
        self.attention_processor = processor

    def compile_blocks(self, backend: str = "inductor") -> None:
        """`torch.compile` the double blocks' passes, `forward_joint` and `forward_image`: nearly all of the
        model's time. The model calls them by name, not through `__call__`, so compiling the module would not
        reach them. All blocks share one graph per pass (a block reads its layer's K/V, never the layer's
        number), and the graphs take dynamic shapes (frames, context and text lengths), so a rollout compiles
        three graphs, not one per chunk (docs/performance.md)."""
        # Each variant of a pass is a graph of its own (batch 1 or 2, with or without a key mask, a context, kept
        # K/V); a resident worker meets them all, more than dynamo's default 8, after which it would run eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        for block in self.double_blocks:
            block.forward_joint = torch.compile(block.forward_joint, backend=backend, dynamic=True)
            block.forward_image = torch.compile(block.forward_image, backend=backend, dynamic=True)
        self.compile_backend = backend

    def _maybe_checkpoint(self, function, *args):
        """`function(*args)`, under activation checkpointing when training asks for it."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    # -- conditioning -------------------------------------------------------------------------------

    def embed_prompt(self, prompt: PromptEmbeddings, text_timestep: torch.Tensor):
        """Text sequence [B, L, C] ordered [SigLIP | byT5 valid | LLM valid | zero pads], its mask [B, L] (None
        when nothing is padded) and the text modulation vector [B, C]."""
        dtype = self.dtype
        llm_mask = prompt.llm_mask.bool()
        # 1. LLM tokens through the refiner, which is conditioned on the text timestep; text attends to text
        #    only, so every rank of a sequence-parallel group refines it whole. The slots after the last valid
        #    token of the batch are padding the refiner masks and the packing drops: not refined at all (a
        #    short prompt fills ~14 of the 1000 slots)
        valid_slots = llm_mask.any(dim=0).nonzero()
        length = int(valid_slots.max()) + 1 if len(valid_slots) else 1
        llm_mask = llm_mask[:, :length]
        llm = self.txt_in(prompt.llm[:, :length].to(dtype), text_timestep, llm_mask, self.attention_processor)
        llm = llm + self.cond_type_embedding.weight[COND_TYPE_LLM]
        # 2. byT5 glyph tokens
        byt5 = self.byt5_in(prompt.byt5.to(dtype)) + self.cond_type_embedding.weight[COND_TYPE_BYT5]
        parts = [(byt5, prompt.byt5_mask.bool()), (llm, llm_mask)]
        # 3. SigLIP tokens (all valid) go first
        if prompt.vision is not None:
            vision = self.vision_in(prompt.vision.to(dtype)) + self.cond_type_embedding.weight[COND_TYPE_VISION]
            parts.insert(0, (vision, torch.ones(vision.shape[:2], dtype=torch.bool, device=vision.device)))
        tokens, mask = pack_valid_tokens(parts)
        return tokens, mask, self.time_in(text_timestep)

    def embed_frames(self, timestep: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-frame modulation vector [B, T, C] = time_in(t) + action_in(action)."""
        batch, frames = timestep.shape
        vec = self.time_in(timestep.reshape(-1)) + self.action_in(action.reshape(-1).float())
        return vec.view(batch, frames, -1)

    def embed_image(self, hidden_states: torch.Tensor, time_offset: int):
        """Tokens [B, T, S, C], RoPE for time positions time_offset.. and the token grid (T, H', W')."""
        _, _, frames, height, width = hidden_states.shape
        _, patch_h, patch_w = self.config.patch_size
        grid = (frames, height // patch_h, width // patch_w)
        img = self.img_in(hidden_states.to(self.dtype))
        time_positions = torch.arange(time_offset, time_offset + frames)
        rope = RotaryEmbedding(self.config, time_positions, grid[1], grid[2]).to(img.device)
        return img, rope, grid

    def prepare_frames(self, hidden_states, timestep, viewmats, intrinsics, action, time_offset: int):
        """Tokens [B, T, S, C], per-frame vec, RoPE for time positions time_offset.., PRoPE cameras, grid."""
        batch, _, frames = hidden_states.shape[:3]
        img, rope, grid = self.embed_image(hidden_states, time_offset)
        timestep = per_frame(timestep, batch, frames, img.device)
        frame_vec = self.embed_frames(timestep, action.to(img.device).reshape(batch, frames))
        camera = CameraProjection(viewmats.to(img.device), intrinsics.to(img.device), img.dtype)
        return img, frame_vec, rope, camera, grid

    def final_output(self, img: torch.Tensor, frame_vec: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Final layer and unpatchify: [B, T, S, C] -> [B, out_channels, T, H, W]."""
        out = self.final_layer(img, frame_vec)
        frames, grid_h, grid_w = grid
        _, patch_h, patch_w = self.config.patch_size
        batch, channels = out.shape[0], self.config.out_channels
        out = out.view(batch, frames, grid_h, grid_w, channels, patch_h, patch_w)
        out = out.permute(0, 4, 1, 2, 5, 3, 6)
        return out.reshape(batch, channels, frames, grid_h * patch_h, grid_w * patch_w)

    # -- bidirectional ------------------------------------------------------------------------------

    def forward_bi(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        prompt: PromptEmbeddings,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        text_timestep: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Joint image+text attention over all T frames (RoPE time 0..T-1); returns [B, out_channels, T, H, W].

        `text_timestep` conditions the text stream (the official bi rollout passes the current t); it may be
        omitted when `timestep` is one value per sample.
        """
        batch = hidden_states.shape[0]
        if text_timestep is None:
            text_timestep = per_sample_default(timestep, batch)
        # 1. image tokens, per-frame modulation vectors, RoPE and cameras; this rank's share of the tokens
        img, frame_vec, rope, camera, grid = self.prepare_frames(
            hidden_states, timestep, viewmats, intrinsics, action, time_offset=0
        )
        img, rope, attention = self.attention_processor.shard_frames(img, rope)
        # 2. text tokens at the text timestep
        txt, text_mask, text_vec = self.embed_prompt(prompt, per_sample(text_timestep, batch, img.device))
        # 3. the double blocks
        for block in self.double_blocks:
            img, txt = self._maybe_checkpoint(
                block.forward_joint, img, txt, frame_vec, text_vec, rope, camera, text_mask, attention
            )
        return self.final_output(attention.gather_frames(img), frame_vec, grid)

    # -- super-resolution ---------------------------------------------------------------------------

    def forward_sr(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        prompt: PromptEmbeddings,
        timestep_r: torch.Tensor | float | None = None,
        text_timestep: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The SR checkpoint's pass: joint image+text attention over all T frames (RoPE time 0..T-1) with
        neither cameras nor actions; returns [B, out_channels, T, H, W].

        hidden_states [B, in_channels, T, H, W] are the SR channels as the stage assembles them (latents |
        image condition + mask | low-resolution latents + ones). `timestep_r`, one value per sample, is the
        meanflow target (the next step's timestep, 0 at the last): `time_r_in` of it joins every frame's
        vector, not the text stream's.
        """
        batch, _, frames = hidden_states.shape[:3]
        if text_timestep is None:
            text_timestep = per_sample_default(timestep, batch)
        # 1. image tokens and per-frame vectors; this rank's share of the tokens
        img, rope, grid = self.embed_image(hidden_states, time_offset=0)
        frame_vec = self.time_in(per_frame(timestep, batch, frames, img.device).reshape(-1)).view(batch, frames, -1)
        if timestep_r is not None:
            frame_vec = frame_vec + self.time_r_in(per_sample(timestep_r, batch, img.device))[:, None]
        img, rope, attention = self.attention_processor.shard_frames(img, rope)
        # 2. text tokens at the text timestep
        txt, text_mask, text_vec = self.embed_prompt(prompt, per_sample(text_timestep, batch, img.device))
        # 3. the double blocks without their camera branch
        for block in self.double_blocks:
            img, txt = self._maybe_checkpoint(
                block.forward_joint, img, txt, frame_vec, text_vec, rope, None, text_mask, attention
            )
        return self.final_output(attention.gather_frames(img), frame_vec, grid)

    # -- autoregressive -----------------------------------------------------------------------------

    def forward_text(self, prompt: PromptEmbeddings, text_timestep: torch.Tensor | float = 0.0) -> KVCache:
        """Text stream alone (text attends to text) at `text_timestep`; returns the per-layer text K/V cache."""
        batch = prompt.llm.shape[0]
        txt, text_mask, text_vec = self.embed_prompt(prompt, per_sample(text_timestep, batch, self.device))
        keys, values = [], []
        last = len(self.double_blocks) - 1
        for index, block in enumerate(self.double_blocks):
            modulation = tuple(m.unsqueeze(1) for m in block.txt_mod(text_vec))
            # the last layer's text output feeds nothing: its keys and values are all the cache holds of it (the
            # attention and MLP skipped there are ~1/num_layers of a new prompt's text pass)
            query, key, value = block.text_qkv(txt, modulation, with_query=index < last)
            key, value = to_heads_first(key), to_heads_first(value)
            keys.append(key)
            values.append(value)
            if index == last:
                break
            # text attends to text only: every rank of a sequence-parallel group computes it whole
            attended = self.attention_processor(to_heads_first(query), key, value, text_mask)
            txt = block.finish_text(txt, from_heads_first(attended, query.shape), modulation)
        return KVCache(text_keys=tuple(keys), text_values=tuple(values), text_mask=text_mask)

    def forward_context(
        self,
        hidden_states: torch.Tensor,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache,
        timestep: torch.Tensor | float = 14.0,
    ) -> KVCache:
        """Run the n selected clean context latents (RoPE time 0..n-1) attending to [text, themselves].

        Returns `cache` with its context part replaced by these frames' per-layer K/V of both branches.
        """
        _, keys, values = self._vision_pass(
            hidden_states, timestep, viewmats, intrinsics, action, cache.without_context(), keep_kv=True
        )
        return cache.with_context(keys, values, hidden_states.shape[2])

    def forward_chunk(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        """Denoise a chunk (RoPE time n.. after the n cached context frames) attending to [text, context,
        itself]; returns [B, out_channels, T, H, W]. The cache is read, never extended."""
        out, _, _ = self._vision_pass(hidden_states, timestep, viewmats, intrinsics, action, cache, keep_kv=False)
        return out

    def forward_chunk_causal(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        viewmats: torch.Tensor,
        intrinsics: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache,
        chunk_latents: int,
        window: AttentionWindow | None = None,
    ) -> torch.Tensor:
        """The chunk-causal training pass (the official `torch_causal` mode) over a whole window (RoPE time
        0..T-1): latent chunk i (of `chunk_latents` latents) attends to [text, chunks 0..i], bidirectionally
        inside itself (with an attention `window`: to its sink and local window only, the block mask of
        MatrixGame2's causal model); `cache` holds the text K/V of `forward_text`. Returns
        [B, out_channels, T, H, W].

        Every chunk sees what the AR passes show it: with two chunks, the last chunk's output equals
        `forward_chunk` after `forward_context` of the first.
        """
        if window is not None:
            window.check_chunks(chunk_latents)
        out, _, _ = self._vision_pass(
            hidden_states,
            timestep,
            viewmats,
            intrinsics,
            action,
            cache,
            keep_kv=False,
            chunk_latents=chunk_latents,
            window=window,
        )
        return out

    def _vision_pass(
        self,
        hidden_states,
        timestep,
        viewmats,
        intrinsics,
        action,
        cache: KVCache,
        keep_kv: bool,
        chunk_latents=None,
        window: AttentionWindow | None = None,
    ):
        """Image-only pass against the cache, causal by chunks of `chunk_latents` frames (one chunk when None);
        returns (output or None when keep_kv, per-layer keys, values)."""
        batch = hidden_states.shape[0]
        if cache.batch_size != batch:
            raise ValueError(f"KV cache holds batch {cache.batch_size}, hidden_states has batch {batch}")
        # 1. image tokens at RoPE time positions after the cached context frames; this rank's share of them
        img, frame_vec, rope, camera, grid = self.prepare_frames(
            hidden_states, timestep, viewmats, intrinsics, action, cache.context_frames
        )
        img, rope, attention = self.attention_processor.shard_frames(img, rope)
        # 2. the double blocks' image halves; the cache is read, never written, inside a block
        keys, values = [], []
        for index, block in enumerate(self.double_blocks):
            img, frame_keys, frame_values = self._maybe_checkpoint(
                block.forward_image,
                img,
                frame_vec,
                rope,
                camera,
                cache.layer(index),
                chunk_latents,
                keep_kv,
                attention,
                window,
            )
            if keep_kv:
                keys.append(frame_keys)
                values.append(frame_values)
        if keep_kv:
            # the context pass only feeds the cache; its final-layer output is never used
            return None, tuple(keys), tuple(values)
        return self.final_output(attention.gather_frames(img), frame_vec, grid), (), ()


# ---------------------------------------------------------------------------------------------------
# Helpers


def pack_valid_tokens(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the valid tokens of each part per sample, then zero padding up to the longest sample.

    Padded tokens never act as keys, so trimming the common padding changes no result. Returns the tokens
    [B, L, C] and a mask [B, L], or None for the mask when every sample has L valid tokens.
    """
    batch = parts[0][0].shape[0]
    rows = [torch.cat([tokens[index][mask[index]] for tokens, mask in parts]) for index in range(batch)]
    lengths = [row.shape[0] for row in rows]
    longest = max(lengths)
    packed = torch.stack([F.pad(row, (0, 0, 0, longest - row.shape[0])) for row in rows])
    if min(lengths) == longest:
        return packed, None
    positions = torch.arange(longest, device=packed.device)
    mask = positions[None] < torch.tensor(lengths, device=packed.device)[:, None]
    return packed, mask


def per_sample(value: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """A float, a 0-d or a [B] tensor -> float tensor [B]."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.ndim == 0:
        return value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"expected one value per sample (shape [{batch}]), got {tuple(value.shape)}")
    return value.float()


def per_sample_default(timestep: torch.Tensor | float, batch: int) -> torch.Tensor | float:
    """The text timestep implied by `timestep` when it has one value per sample."""
    if not torch.is_tensor(timestep) or timestep.ndim == 0 or timestep.shape == (batch,):
        return timestep
    raise ValueError("timestep is per frame; pass text_timestep explicitly")


def per_frame(value: torch.Tensor | float, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """A float, a 0-d, a [B] or a [B, T] tensor -> float tensor [B, T]."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.ndim == 0:
        return value.expand(batch, frames)
    if value.shape == (batch,):
        return value[:, None].expand(batch, frames)
    if value.shape == (batch, frames):
        return value
    raise ValueError(f"timestep must be a float, [{batch}] or [{batch}, {frames}]; got {tuple(value.shape)}")
