"""The distilled student in the official layout, so it runs as the `ar-distilled` variant (4 steps, no CFG).

Every checkpoint of a distillation run holds `ar_distilled_action_model/diffusion_pytorch_model.safetensors`
(the folder the `ar-distilled` record names), linked to the student's EMA weights when the run keeps them,
else to its live weights. `export_model_dir` builds a whole model directory around it: every entry of the
teacher's model directory linked, the distilled folder holding the student, so `worldplay generate
--model-dir <it> --variant ar-distilled` and the pipeline run it unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from worker.training.checkpoints import EMA_SUBDIR, TRANSFORMER_SUBDIR, WEIGHTS_NAME
from worldplay_cli.contract import layout
from worldplay_cli.contract.errors import BadInput

DISTILLED_VARIANT = "ar-distilled"


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy of multi-GB weights), a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def student_weights(checkpoint: Path) -> Path:
    ema = checkpoint / EMA_SUBDIR / WEIGHTS_NAME
    return ema if ema.is_file() else checkpoint / TRANSFORMER_SUBDIR / WEIGHTS_NAME


def write_distilled_layout(checkpoint: Path) -> Path:
    """`<checkpoint>/<ar-distilled action dir>/diffusion_pytorch_model.safetensors`; returns that file."""
    target = checkpoint / layout.action_checkpoint(DISTILLED_VARIANT)
    link_or_copy(student_weights(checkpoint), target)
    return target


def export_model_dir(checkpoint: str | Path, model_dir: str | Path, out: str | Path) -> Path:
    """A model directory at `out` that runs the checkpoint's student as `ar-distilled`: the entries of
    `model_dir` symlinked, the distilled action folder replaced by the student's."""
    checkpoint, model_dir, out = Path(checkpoint), Path(model_dir).resolve(), Path(out)
    weights = checkpoint / layout.action_checkpoint(DISTILLED_VARIANT)
    if not weights.is_file():
        raise BadInput(f"{checkpoint} holds no distilled student", "export a checkpoint of a distillation run")
    if not (model_dir / layout.TRANSFORMER_DIR).is_dir():
        raise BadInput(f"{model_dir} is not a model directory", "give the model directory the run trained from")
    if out.exists():
        raise BadInput(f"{out} exists", "choose a new directory (an export never overwrites)")
    distilled = layout.action_dir(DISTILLED_VARIANT)
    out.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name != distilled:
            (out / entry.name).symlink_to(entry)
    link_or_copy(weights, out / layout.action_checkpoint(DISTILLED_VARIANT))
    return out
