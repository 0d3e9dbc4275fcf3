"""LoRA adapters that leave the model's parameter names untouched.

Each targeted `nn.Linear` keeps its weight; a forward hook adds `scale · B(A(x))` (B zero-initialised, so
step 0 equals the base model). The adapters live in their own module, so the transformer's state dict
keeps the official key names, and `merge_into` folds W + scale·B·A into them for export: the
checkpoint loads strictly into the engine and the official code without any LoRA support. Under FSDP the
frozen base model is sharded while the adapters stay whole on every rank (the trainer averages their
gradients), since the hooks only read the Linear's input and output, never its sharded weight.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from worldplay_cli.contract.training import LoRASection


class LoRAAdapter(nn.Module):
    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Parameter(
            torch.empty(rank, linear.in_features, dtype=torch.float32, device=linear.weight.device)
        )
        self.up = nn.Parameter(torch.zeros(linear.out_features, rank, dtype=torch.float32, device=linear.weight.device))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scale = alpha / rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.down.dtype) @ self.down.T @ self.up.T * self.scale).to(x.dtype)

    def weight_delta(self) -> torch.Tensor:
        return self.up @ self.down * self.scale


class LoRA(nn.Module):
    """The adapters of one model, keyed by the targeted Linear's name ('.' replaced by '__')."""

    def __init__(self, model: nn.Module, config: LoRASection):
        super().__init__()
        self.adapters = nn.ModuleDict()
        self._handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and any(fnmatch.fnmatchcase(name, pattern) for pattern in config.targets):
                adapter = LoRAAdapter(module, config.rank, config.alpha)
                self.adapters[name.replace(".", "__")] = adapter
                self._handles.append(module.register_forward_hook(_hook(adapter)))
        if not self.adapters:
            raise ValueError(f"lora.targets {config.targets} match no Linear layer of the model")

    def merge_into(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` (the model's full state dict, official names) with every adapter folded into its Linear
        weight."""
        merged = dict(state)
        for key, adapter in self.adapters.items():
            weight = key.replace("__", ".") + ".weight"
            merged[weight] = state[weight] + adapter.weight_delta().detach().to(state[weight])
        return merged


def _hook(adapter: LoRAAdapter):
    def add_delta(module, inputs, output):
        return output + adapter.delta(inputs[0])

    return add_delta
