"""Where training clips come from: one prepared dataset, a weighted mix of several, or shards streamed from a
directory too large to index in memory.

The sample builder asks for the clip of global sample index g. A mix maps g to (dataset d, the k-th draw of
d) without any state: the indices are cut into blocks of `MIX_BLOCK`; block b gives dataset d
floor(p_d·B·(b+1)) − floor(p_d·B·b) places (the heaviest dataset takes the rest), in a seeded order. So the
shares match the weights to 1/(B·b) after b blocks, the same g always draws the same clip, and a resumed run
draws exactly what the uninterrupted one would have.

An indexed dataset's k-th draw is its seeded permutation of the epoch k // n at k % n. A streamed dataset
reads `shards/*.safetensors` in a seeded order per epoch, one shard open at a time, its clip records from the
shard's own metadata (written by `worldplay data prepare`), never `index.json`; its k-th draw is the next
record, so it keeps a cursor, which checkpoints save (`state_dict`) and a resume restores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.training.dataset import SHARD_DIR, ClipTensors, PreparedDataset
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import PreparedClip

MIX_BLOCK = 256
# Salts of the random streams (batches.py uses 1 and 2).
_CLIP_ORDER, _MIX, _SHARD_ORDER, _IN_SHARD = 1, 3, 4, 5


class IndexedSource:
    """A prepared dataset's training clips (those long enough), in a seeded permutation per epoch."""

    def __init__(self, dataset: PreparedDataset, min_latents: int, seed_key: list[int], split: str = "train"):
        self.dataset = dataset
        self.seed_key = seed_key
        records = dataset.clips(split)
        self.clips = [clip.id for clip in records if clip.num_latents >= min_latents]
        self.skipped = len(records) - len(self.clips)
        self._cache: dict[str, ClipTensors] = {}

    def clip(self, draw: int) -> ClipTensors:
        epoch, position = divmod(draw, len(self.clips))
        order = np.random.default_rng([*self.seed_key, _CLIP_ORDER, epoch]).permutation(len(self.clips))
        clip_id = self.clips[order[position]]
        if clip_id not in self._cache:
            self._cache[clip_id] = self.dataset.load(clip_id)
        return self._cache[clip_id]

    def mark(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class Cursor:
    """The stream's position: the next draw, the epoch, the shard (in the epoch's order) and the record in it."""

    draw: int = 0
    epoch: int = 0
    shard: int = 0
    record: int = 0


class ShardStream:
    """Clip records read shard by shard (lazily, one open file); draws must come in increasing order."""

    def __init__(self, directory: str | Path, min_latents: int, seed_key: list[int], split: str = "train"):
        self.directory = Path(directory)
        self.min_latents = min_latents
        self.seed_key = seed_key
        self.split = split
        # the file names only (a directory listing), never the shards' contents
        shard_dir = self.directory / SHARD_DIR
        try:
            self.shard_names = sorted(
                entry.name for entry in os.scandir(shard_dir) if entry.name.endswith(".safetensors")
            )
        except FileNotFoundError:
            raise BadInput(
                f"no {SHARD_DIR}/ in {self.directory}", "stream a directory `worldplay data prepare` wrote"
            ) from None
        if not self.shard_names:
            raise BadInput(f"{shard_dir} holds no .safetensors shards", "stream a prepared dataset")
        self.cursor = Cursor()
        self._mark = Cursor()
        self._shard_key: tuple[int, int] | None = None
        self._handle = None
        self._records: list[PreparedClip] = []

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([*self.seed_key, _SHARD_ORDER, epoch]).permutation(len(self.shard_names))

    def _open(self, epoch: int, shard: int) -> list[PreparedClip]:
        from safetensors import safe_open

        if self._shard_key == (epoch, shard):
            return self._records
        name = self.shard_names[self._order(epoch)[shard]]
        self._handle = None  # one shard open at a time
        handle = safe_open(str(self.directory / SHARD_DIR / name), framework="pt", device="cpu")
        text = (handle.metadata() or {}).get("clips")
        if text is None:
            raise BadInput(
                f"shard {name} of {self.directory} carries no clip records",
                "prepare it again with this version of `worldplay data prepare` to stream it",
            )
        records = [PreparedClip.model_validate(record) for record in json.loads(text)]
        records = [r for r in records if r.split == self.split and r.num_latents >= self.min_latents]
        order = np.random.default_rng([*self.seed_key, _IN_SHARD, epoch, shard]).permutation(len(records))
        self._handle, self._shard_key, self._records = handle, (epoch, shard), [records[i] for i in order]
        return self._records

    def _step(self) -> PreparedClip:
        """The record under the cursor; the cursor moves past it."""
        empty_shards = 0
        while True:
            records = self._open(self.cursor.epoch, self.cursor.shard)
            if self.cursor.record < len(records):
                record = records[self.cursor.record]
                self.cursor.record += 1
                self.cursor.draw += 1
                return record
            empty_shards += 1
            if empty_shards > len(self.shard_names):
                raise BadInput(
                    f"no {self.split} clip of {self.directory} has the {self.min_latents} latents a sample needs",
                    "lower method.window_latents or prepare longer clips",
                )
            self.cursor.shard, self.cursor.record = self.cursor.shard + 1, 0
            if self.cursor.shard == len(self.shard_names):
                self.cursor.epoch, self.cursor.shard = self.cursor.epoch + 1, 0

    def clip(self, draw: int) -> ClipTensors:
        if draw < self.cursor.draw:
            raise RuntimeError(f"stream draws must increase: draw {draw} after {self.cursor.draw}")
        while self.cursor.draw < draw:
            self._step()
        record = self._step()
        return PreparedDataset.read_clip(self._handle, record)

    def mark(self) -> None:
        """Remember the cursor: the state a checkpoint saves (taken before a step's draws, so every rank's
        next draw lies at or after it)."""
        self._mark = Cursor(**vars(self.cursor))

    def state_dict(self) -> dict:
        return dict(vars(self._mark))

    def load_state_dict(self, state: dict) -> None:
        self.cursor = Cursor(**state)
        self._mark = Cursor(**state)


def mix_counts(weights: list[float], block: int) -> np.ndarray:
    """Cumulative places C[d] of each dataset after `block` blocks; the heaviest dataset takes the rest."""
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    counts = np.floor(shares * MIX_BLOCK * block).astype(np.int64)
    heaviest = int(np.argmax(shares))
    counts[heaviest] = MIX_BLOCK * block - (counts.sum() - counts[heaviest])
    return counts


class Mix:
    """Global sample index -> (dataset, its draw), stateless (see the module docstring)."""

    def __init__(self, weights: list[float], seed: int):
        self.weights = weights
        self.seed = seed
        self._block: tuple[int, np.ndarray, np.ndarray] | None = None

    def locate(self, global_index: int) -> tuple[int, int]:
        block, position = divmod(global_index, MIX_BLOCK)
        if self._block is None or self._block[0] != block:
            start, end = mix_counts(self.weights, block), mix_counts(self.weights, block + 1)
            places = np.repeat(np.arange(len(self.weights)), end - start)
            datasets = np.random.default_rng([self.seed, _MIX, block]).permutation(places)
            # the draw number of each place: the dataset's count before the block plus its earlier places here
            draws = np.empty(MIX_BLOCK, dtype=np.int64)
            for dataset in range(len(self.weights)):
                where = np.flatnonzero(datasets == dataset)
                draws[where] = start[dataset] + np.arange(len(where))
            self._block = (block, datasets, draws)
        _, datasets, draws = self._block
        return int(datasets[position]), int(draws[position])


@dataclass(frozen=True)
class _Entry:
    """`data.path` as the one entry of a run without `data.mix`."""

    path: str
    weight: float
    streaming: bool


class ClipSources:
    """The training clips of a run (`data.path`, `data.streaming`, `data.mix`) by global sample index."""

    def __init__(self, primary: PreparedDataset, data, min_latents: int, seed: int, split: str = "train"):
        entries = data.mix or [_Entry(str(primary.directory), 1.0, data.streaming)]
        self.sources: list[IndexedSource | ShardStream] = []
        for number, entry in enumerate(entries):
            # a single dataset keeps the run's original order (the seed alone)
            key = [seed] if not data.mix else [seed, number]
            if entry.streaming:
                self.sources.append(ShardStream(entry.path, min_latents, key, split))
            else:
                dataset = primary if Path(entry.path) == primary.directory else PreparedDataset(entry.path)
                source = IndexedSource(dataset, min_latents, key, split)
                if data.mix and not source.clips:
                    raise BadInput(
                        f"no training clip of {entry.path} has the {min_latents} latents a sample needs",
                        "lower method.window_latents or prepare longer clips",
                    )
                self.sources.append(source)
        self.mix = Mix([entry.weight for entry in entries], seed) if len(entries) > 1 else None
        self.skipped = sum(getattr(source, "skipped", 0) for source in self.sources)
        self.streamed = any(isinstance(source, ShardStream) for source in self.sources)

    def clip(self, global_index: int) -> ClipTensors:
        dataset, draw = self.mix.locate(global_index) if self.mix else (0, global_index)
        return self.sources[dataset].clip(draw)

    def mark(self) -> None:
        for source in self.sources:
            source.mark()

    def state_dict(self) -> dict:
        return {"sources": [source.state_dict() for source in self.sources]}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        for source, saved in zip(self.sources, state["sources"]):
            source.load_state_dict(saved)
