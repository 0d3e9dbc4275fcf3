"""Checkpoints: a release-format transformer plus everything needed to resume exactly.

    <output_dir>/checkpoint-<step>/
        transformer/diffusion_pytorch_model.safetensors   consolidated full state dict, official key names
        transformer/config.json                           official config (LoRA merged into the weights)
        ema/diffusion_pytorch_model.safetensors           the EMA weights, when EMA is on
        training_state.pt                                 optimizer, LR schedule, EMA shadow, LoRA adapters
        metadata.json                                     step, the run config, the loss at save time

A checkpoint is written into a hidden temporary directory and renamed into place, so a crash never leaves
a half-written `checkpoint-N`; only the newest `keep_last` are kept. Sample randomness is derived from the
step (batches.py), so resuming needs no RNG state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from worldplay_cli.contract import layout
from worldplay_cli.contract.errors import BadInput

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRANSFORMER_SUBDIR = "transformer"
EMA_SUBDIR = "ema"
WEIGHTS_NAME = layout.WEIGHTS_NAME
STATE_NAME = "training_state.pt"
METADATA_NAME = "metadata.json"


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / METADATA_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the newest one inside a run's output directory."""
    path = Path(path)
    if (path / METADATA_NAME).is_file() and CHECKPOINT_PATTERN.match(path.name):
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise BadInput(
            f"no checkpoint in {path}", "pass a run's output directory or one of its checkpoint-N directories"
        )
    return found[-1][1]


def write_checkpoint(
    output_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    transformer_config: dict,
    state: dict,
    metadata: dict,
    ema_weights: dict[str, torch.Tensor] | None = None,
    keep_last: int | None = None,
) -> Path:
    from worker.training.dataset import write_json_atomic, write_safetensors_atomic

    final = output_dir / f"checkpoint-{step}"
    temporary = output_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    (temporary / TRANSFORMER_SUBDIR).mkdir(parents=True)
    write_safetensors_atomic(temporary / TRANSFORMER_SUBDIR / WEIGHTS_NAME, weights, {"format": "pt"})
    (temporary / TRANSFORMER_SUBDIR / "config.json").write_text(json.dumps(transformer_config, indent=2) + "\n")
    if ema_weights is not None:
        write_safetensors_atomic(temporary / EMA_SUBDIR / WEIGHTS_NAME, ema_weights, {"format": "pt"})
    torch.save(state, temporary / STATE_NAME)
    write_json_atomic(temporary / METADATA_NAME, {"step": step, **metadata})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    if keep_last is not None:
        for _, old in checkpoint_dirs(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_metadata(checkpoint: Path) -> dict:
    return json.loads((checkpoint / METADATA_NAME).read_text())
