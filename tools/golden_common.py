"""Helpers the golden-tensor tools (tools/make_*_golden.py) share; not part of the package.

The tools run as scripts (`python tools/make_x_golden.py`), so this folder is on their import path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch


def seeded_weights(model: torch.nn.Module, seed: int, scale: float) -> list[tuple[str, tuple[int, ...]]]:
    """Overwrite every parameter with seeded noise in registration order; returns (name, shape) in order."""
    order = [(name, tuple(parameter.shape)) for name, parameter in model.named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) * scale for name, shape in order}
    model.load_state_dict(state, strict=True)
    return order


def write_order(path: Path, order: list[tuple[str, tuple[int, ...]]]) -> None:
    """The `name<TAB>(shape)` lines the tests' golden_util.read_param_order reads."""
    path.write_text("".join(f"{name}\t{shape}\n" for name, shape in order))


def upstream_commit(checkout: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
