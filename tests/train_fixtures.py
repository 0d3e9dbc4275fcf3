"""Shared, built-once inputs of the training tests: a tiny model directory, a small synthetic dataset and its
prepared form. Built lazily into one temporary directory per test process (several test modules use it),
removed at exit. Everything is tiny: 32x32 frames, 16-latent clips, a 2-block width-64 transformer."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

SYNTH_SIZE = 32
SYNTH_LATENTS = 16
TRAIN_CLIPS = 4
VALIDATION_CLIPS = 2


@cache
def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="worldplay-train-tests-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@cache
def tiny_model_dir() -> Path:
    from worker.pipeline.tiny_model import write_tiny_model

    return write_tiny_model(workspace() / "model")


@cache
def synthetic_raw() -> Path:
    from worker.training.synthetic import SynthOptions, write_synthetic_dataset

    out = workspace() / "raw"
    options = SynthOptions(width=SYNTH_SIZE, height=SYNTH_SIZE, num_latents=SYNTH_LATENTS)
    write_synthetic_dataset(out, TRAIN_CLIPS, VALIDATION_CLIPS, options, seed=0)
    return out


@cache
def prepared_dataset() -> Path:
    from worker.training.prepare import PrepareOptions, prepare_dataset

    out = workspace() / "prepared"
    prepare_dataset(synthetic_raw(), out, tiny_model_dir(), PrepareOptions(clips_per_shard=4))
    return out


def train_config_data(output_dir: Path, **sections) -> dict:
    """A small AR config over the prepared dataset: 12-latent windows (first chunk + 1 retrieved clip of
    spatial memory, 1 chunk of temporal context, the target chunk)."""
    data = {
        "version": 1,
        "model": {"model_dir": str(tiny_model_dir()), "init": "ar"},
        "data": {"path": str(prepared_dataset()), "cfg_dropout": 0.1},
        "method": {"name": "ar", "chunk_latents": 4, "window_latents": 12, "context_latents": 4, "memory_points": 2000},
        "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.0},
        "max_steps": 10,
        "checkpoint": {"output_dir": str(output_dir), "every_steps": 5},
        "logging": {"every_steps": 1, "tensorboard": "off"},
    }
    for name, value in sections.items():
        data[name] = value
    return data


def run_training_process(config: Path, processes: int) -> list[dict]:
    """`python -m worker.training train CONFIG --events` as one process or `processes` torchrun gloo ranks;
    asserts it succeeded and returns its JSON records."""
    import json
    import os
    import subprocess
    import sys

    launcher = (
        [sys.executable]
        if processes == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    )
    result = subprocess.run(
        [*launcher, "-m", "worker.training", "train", str(config), "--events"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
