"""FP8 weights for the transformer's double blocks (`--weights fp8`): half the memory of bf16 weights.

Every `nn.Linear` of the double blocks (the projections, the MLPs and the modulations: ~98 % of the released
model's 8.3 B parameters) is replaced by an `FP8Linear` that stores its weight as float8_e4m3fn with one
fp32 scale per output channel (the row's largest magnitude maps to the format's largest value, 448), so no
row loses its small weights to another row's large ones. The other layers (embedders, token refiner, final
layer, norms) keep the model's dtype.

Two matmuls, chosen once for the device the model runs on and reported in the manifest, never switched
silently:
- `upcast` (any device, the tested path): the stored weight is upcast to the activations' dtype for each
  matmul and the output scaled per channel; the weights stay fp8 at rest, the upcast copy of one layer is
  transient. The math is the model's own with weights rounded to 3 mantissa bits.
- `scaled_mm` (CUDA devices of compute capability 9.0 and above, H100 class): the activations are rounded to
  FP8 too, one scale per row, and `torch._scaled_mm` multiplies in FP8 on the tensor cores.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max

Matmul = Literal["upcast", "scaled_mm"]

# torch._scaled_mm with one scale per row and per column needs Hopper's FP8 tensor cores.
SCALED_MM_CAPABILITY = (9, 0)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [out, in] -> its float8_e4m3fn values and fp32 scales [out], weight ≈ values · scales[:, None]."""
    weight = weight.detach().float()
    # an all-zero row keeps scale 1 (its values are 0 whatever the scale)
    scale = weight.abs().amax(dim=1) / FP8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = (weight / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return values, scale


def scaled_mm_usable(device: torch.device | str) -> bool:
    device = torch.device(device)
    return (
        device.type == "cuda"
        and torch.cuda.is_available()
        and hasattr(torch, "_scaled_mm")
        and torch.cuda.get_device_capability(device) >= SCALED_MM_CAPABILITY
    )


def matmul_for(device: torch.device | str) -> Matmul:
    """The FP8 matmul a model on `device` runs: `scaled_mm` where the tensor cores take FP8, else `upcast`."""
    return "scaled_mm" if scaled_mm_usable(device) else "upcast"


class FP8Linear(nn.Module):
    """A Linear whose weight is stored in FP8 with per-output-channel scales (see the module docstring)."""

    def __init__(self, values: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, matmul: Matmul):
        super().__init__()
        self.out_features, self.in_features = values.shape
        self.matmul = matmul
        self.weight = nn.Parameter(values, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, matmul: Matmul = "upcast") -> FP8Linear:
        values, scale = quantize(linear.weight)
        return cls(values.to(linear.weight.device), scale.to(linear.weight.device), linear.bias, matmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matmul == "scaled_mm":
            return self._scaled_mm(x)
        # x · (values · diag(scale))ᵀ = (x · valuesᵀ) · diag(scale): the scale goes on the output columns
        out = F.linear(x, self.weight.to(x.dtype)) * self.weight_scale.to(x.dtype)
        return out if self.bias is None else out + self.bias

    def _scaled_mm(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        row_scale = (rows.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
        rows_fp8 = (rows.float() / row_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        out = torch._scaled_mm(
            rows_fp8,
            self.weight.t(),  # column-major [in, out], as the kernel wants its second operand
            scale_a=row_scale,
            scale_b=self.weight_scale[None, :],
            out_dtype=x.dtype,
        )
        out = out if self.bias is None else out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3, matmul={self.matmul}"


def quantize_blocks(model: nn.Module, matmul: Matmul = "upcast") -> dict:
    """Replace every Linear of `model.double_blocks` by an `FP8Linear`, in place. Returns what it did: the
    matmul, the number of layers, and the blocks' parameter bytes before and after."""
    blocks = model.double_blocks
    before = parameter_bytes(blocks)
    replaced = 0
    for parent in list(blocks.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, FP8Linear.from_linear(child, matmul))
                replaced += 1
    return {"matmul": matmul, "layers": replaced, "bytes_before": before, "bytes_after": parameter_bytes(blocks)}


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def fp8_matmul(model: nn.Module) -> Matmul | None:
    """The matmul of a model's FP8 layers; None when its weights are not FP8."""
    return next((module.matmul for module in model.modules() if isinstance(module, FP8Linear)), None)
