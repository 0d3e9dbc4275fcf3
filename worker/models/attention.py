"""One attention entry point for the transformer: flash-attn when it can run, torch SDPA otherwise, and
SageAttention (8-bit quantised attention) when asked for.

Users of the official code cannot tell which kernel ran (HY-WorldPlay issue #18), so the choice here is
explicit: a backend name is passed in ("auto", "flash", "sdpa" or "sage"), `resolve_backend` says what
"auto" becomes for a given device and dtype ("auto" never picks "sage": its quantisation changes the
numbers), and asking for "flash" or "sage" where it cannot run is an error rather than a silent fallback.

The transformer holds an `AttentionProcessor`: the backend, plus the hooks through which sequence
parallelism shards the image tokens (as diffusers passes `backend=` and `parallel_config=` to its attention
dispatch). The processor here is one process; `worker.parallel.ulysses.UlyssesAttention` is the parallel one.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

BACKENDS: tuple[str, ...] = ("auto", "flash", "sdpa", "sage")

# flash-attn and SageAttention kernels only take half precision.
FLASH_DTYPES = (torch.float16, torch.bfloat16)

# Whether the optional kernels are installed, looked up once: a compiled block (torch.compile) cannot trace
# an import-system lookup, and attention resolves its backend on every call.
_INSTALLED = {package: importlib.util.find_spec(package) is not None for package in ("flash_attn", "sageattention")}

# What a user who asked for a kernel that cannot run should do instead.
_BACKEND_HINTS = {
    "flash": "pip install flash-attn on a CUDA host, or use attention backend auto (torch SDPA)",
    "sage": "pip install sageattention on a CUDA host, or use attention backend auto (flash-attn or torch SDPA)",
}


class BackendUnavailable(RuntimeError):
    """An attention backend was asked for where it cannot run; `hint` says what to do instead."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def flash_attn_installed() -> bool:
    return _INSTALLED["flash_attn"]


def sageattention_installed() -> bool:
    return _INSTALLED["sageattention"]


def flash_attn_usable(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype in FLASH_DTYPES and flash_attn_installed()


def resolve_backend(backend: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The concrete backend ("flash", "sdpa" or "sage") that `attention` runs for this device and dtype;
    `BackendUnavailable` when the one asked for cannot run here."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "sdpa":
        return "sdpa"
    if backend == "auto":
        return "flash" if flash_attn_usable(device, dtype) else "sdpa"
    package = {"flash": "flash_attn", "sage": "sageattention"}[backend]
    if not _INSTALLED[package]:
        reason = f"the {package} package is not installed"
    elif device.type != "cuda" or dtype not in FLASH_DTYPES:
        reason = (
            f"it needs a CUDA device and fp16/bf16 tensors (got {device.type}, {str(dtype).removeprefix('torch.')})"
        )
    else:
        return backend
    raise BackendUnavailable(f"attention backend '{backend}' cannot run: {reason}", _BACKEND_HINTS[backend])


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Full (non-causal) softmax attention with the default 1/sqrt(head_dim) scale.

    query [B, H, Lq, D], key/value [B, H, Lk, D]; `key_mask` [B, Lk] bool marks the keys each batch row may
    attend to (None: all). Returns [B, H, Lq, D].
    """
    resolved = resolve_backend(backend, query.device, query.dtype)
    if resolved == "flash":
        return _flash_attention(query, key, value, key_mask)
    if resolved == "sage":
        return _sage_attention(query, key, value, key_mask)
    attn_mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)


def _flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    # flash-attn wants [B, L, H, D]
    query, key, value = (tensor.transpose(1, 2) for tensor in (query, key, value))
    if key_mask is None:
        return flash_attn_func(query, key, value).transpose(1, 2)

    # Variable key lengths: pack the valid keys of every row and describe rows by cumulative lengths.
    batch, query_len, heads, head_dim = query.shape
    key_lengths = key_mask.sum(dim=1, dtype=torch.int32)
    cu_seqlens_k = F.pad(key_lengths.cumsum(0, dtype=torch.int32), (1, 0))
    cu_seqlens_q = torch.arange(0, (batch + 1) * query_len, query_len, dtype=torch.int32, device=query.device)
    out = flash_attn_varlen_func(
        query.reshape(batch * query_len, heads, head_dim),
        key[key_mask],
        value[key_mask],
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=query_len,
        max_seqlen_k=int(key_lengths.max()),
    )
    return out.view(batch, query_len, heads, head_dim).transpose(1, 2)


def _sage_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    from sageattention import sageattn

    if key_mask is None:
        return sageattn(query, key, value, tensor_layout="HND", is_causal=False)
    # The kernel takes no mask: attending to the valid keys alone is the same thing (masked keys get zero
    # weight), row by row since rows keep different numbers of keys.
    rows = [
        sageattn(query[row : row + 1], key[row : row + 1, :, mask], value[row : row + 1, :, mask], tensor_layout="HND")
        for row, mask in enumerate(key_mask)
    ]
    return torch.cat(rows)


class AttentionProcessor:
    """How the transformer's attention runs: the kernel `backend`, and the token-sharding hooks.

    Between attention calls the image tokens [B, T, S, C] of a pass may be sharded over ranks; inside an
    attention call the kernel needs every key. The model's attention patterns therefore move their tensors
    through these hooks: image q/k/v [B, H, n, D] into the attention layout and the attended image rows back,
    tensors every rank holds whole (the text) likewise, and `image_key_mask` marks the image keys that are
    real tokens. In one process (this class) every hook hands its tensors through unchanged.
    """

    def __init__(self, backend: str = "auto"):
        self.backend = backend

    def check_heads(self, num_heads: int) -> None:
        """Raise if a model with `num_heads` attention heads cannot run through this processor."""

    def __call__(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The kernel, on tensors already in the attention layout (see `attention`)."""
        return attention(query, key, value, key_mask, self.backend)

    def shard_frames(self, img: torch.Tensor, rope) -> tuple[torch.Tensor, object, AttentionProcessor]:
        """This rank's tokens of every frame of a pass: img [B, T, S, C], the RoPE rows `rope.cos/sin`
        [T, S, 1, D], and the processor for the rest of the pass (which knows the split)."""
        return img, rope, self

    def gather_frames(self, img: torch.Tensor) -> torch.Tensor:
        """Every rank's tokens of every frame, [B, T, S, C], before the final layer."""
        return img

    def image_to_attention(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image q/k/v [B, H, n, D] (this rank's n tokens) into the attention layout."""
        return tensors

    def image_from_attention(self, attended: torch.Tensor) -> torch.Tensor:
        """Attended image rows in the attention layout -> [B, H, n, D] for this rank's n tokens."""
        return attended

    def text_to_attention(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor [B, H, L, D] every rank holds whole (text q/k/v) into the attention layout."""
        return tensor

    def text_from_attention(self, attended: torch.Tensor) -> torch.Tensor:
        """Attended text rows in the attention layout -> [B, H, L, D] on every rank."""
        return attended

    def image_key_mask(self, length: int, device: torch.device) -> torch.Tensor | None:
        """Which of `length` image keys in the attention layout are real tokens ([length] bool), None if all."""
        return None
