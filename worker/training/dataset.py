"""The prepared dataset on disk: `index.json` + safetensors shards of cached latents and condition states.

    <dir>/index.json                     DatasetIndex (worldplay_cli.contract.training): clips, rejected clips
    <dir>/shards/shard-00000.safetensors one file per group of clips, written atomically, never rewritten
    <dir>/negative.safetensors           the negative ("") prompt's states, for text CFG dropout

Per clip `<id>/...`: latent [C, T, h, w] and image_cond [C, 1, h, w] (scaled by the VAE scaling factor),
keyboard [F, 4], mouse [F, 2], c2w [F, 4, 4], intrinsics [F, 3, 3] (pixels), and per latent viewmats
[T, 4, 4], intrinsics_norm [T, 3, 3], labels [T], plus vision [Lv, Dv] (SigLIP of frame 0). Prompt states
are stored once per shard under `prompt/<key>/{llm, byt5}` with padding tokens dropped. A shard's metadata
`clips` lists its clip records (JSON), so a stream can read the shards without `index.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from worldplay_cli.contract.training import INDEX_NAME, DatasetIndex, PreparedClip, load_dataset_index

SHARD_DIR = "shards"
NEGATIVE_NAME = "negative.safetensors"
CLIP_TENSORS = (
    "latent",
    "image_cond",
    "keyboard",
    "mouse",
    "c2w",
    "intrinsics",
    "viewmats",
    "intrinsics_norm",
    "labels",
    "vision",
)


@dataclass(frozen=True)
class PromptStates:
    llm: torch.Tensor  # [L, D] valid tokens only
    byt5: torch.Tensor  # [Lb, Db] valid tokens only (Lb may be 0)


@dataclass(frozen=True)
class ClipTensors:
    record: PreparedClip
    latent: torch.Tensor
    image_cond: torch.Tensor
    keyboard: torch.Tensor
    mouse: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    viewmats: torch.Tensor
    intrinsics_norm: torch.Tensor
    labels: torch.Tensor
    vision: torch.Tensor
    prompt: PromptStates

    @property
    def num_latents(self) -> int:
        return self.latent.shape[1]


def write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def write_safetensors_atomic(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def save_index(directory: Path, index: DatasetIndex) -> None:
    write_json_atomic(directory / INDEX_NAME, index.model_dump(mode="json"))


class PreparedDataset:
    """Read access to a prepared dataset; shards are opened lazily and tensors read on demand."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.index = load_dataset_index(self.directory)
        self._records = {clip.id: clip for clip in self.index.clips}
        self._handles: dict[str, object] = {}

    def clips(self, split: str | None = None) -> list[PreparedClip]:
        return [clip for clip in self.index.clips if split is None or clip.split == split]

    def _handle(self, shard: str):
        from safetensors import safe_open

        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.directory / shard), framework="pt", device="cpu")
        return self._handles[shard]

    def load(self, clip_id: str) -> ClipTensors:
        record = self._records[clip_id]
        return self.read_clip(self._handle(record.shard), record)

    @staticmethod
    def read_clip(handle, record: PreparedClip) -> ClipTensors:
        """One clip's tensors and prompt states from its open shard."""
        tensors = {name: handle.get_tensor(f"{record.id}/{name}") for name in CLIP_TENSORS}
        prompt = PromptStates(
            handle.get_tensor(f"prompt/{record.prompt_key}/llm"), handle.get_tensor(f"prompt/{record.prompt_key}/byt5")
        )
        return ClipTensors(record=record, prompt=prompt, **tensors)

    def negative_prompt(self) -> PromptStates:
        from safetensors.torch import load_file

        tensors = load_file(str(self.directory / NEGATIVE_NAME))
        return PromptStates(tensors["llm"], tensors["byt5"])

    def __getstate__(self):
        # safetensors handles do not pickle (data-loader workers reopen them)
        return {"directory": self.directory, "index": self.index, "_records": self._records, "_handles": {}}
