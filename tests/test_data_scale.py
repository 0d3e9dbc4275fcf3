"""Data at scale (#24): weighted dataset mixing, the length curriculum, streamed shards (lazy, resumable) and
Weights & Biases logging that stays off (and unimported) unless asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from worker.training.batches import SampleBuilder
from worker.training.dataset import NEGATIVE_NAME, PreparedDataset, save_index, write_safetensors_atomic
from worker.training.sources import MIX_BLOCK, Mix, ShardStream
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import ARMethod, DataSection, DatasetIndex, PreparedClip, TrainConfig

NUM_LATENTS = 16
METHOD = ARMethod(chunk_latents=4, window_latents=12, memory_probability=0.0)


def write_dataset(directory: Path, name: str, num_shards: int, clips_per_shard: int, with_index: bool = True) -> Path:
    """A small prepared dataset: real safetensors shards whose metadata lists their clips (tiny tensors)."""
    frames = 4 * (NUM_LATENTS - 1) + 1
    records = []
    for shard_number in range(num_shards):
        shard = f"shards/shard-{shard_number:05d}.safetensors"
        tensors = {"prompt/p/llm": torch.ones(3, 8), "prompt/p/byt5": torch.zeros(0, 8)}
        in_shard = []
        for position in range(clips_per_shard):
            clip_id = f"{name}-{shard_number:03d}-{position}"
            tensors.update(
                {
                    f"{clip_id}/latent": torch.randn(4, NUM_LATENTS, 2, 2),
                    f"{clip_id}/image_cond": torch.randn(4, 1, 2, 2),
                    f"{clip_id}/keyboard": torch.zeros(frames, 4),
                    f"{clip_id}/mouse": torch.zeros(frames, 2),
                    f"{clip_id}/c2w": torch.eye(4).repeat(frames, 1, 1),
                    f"{clip_id}/intrinsics": torch.eye(3).repeat(frames, 1, 1),
                    f"{clip_id}/viewmats": torch.eye(4).repeat(NUM_LATENTS, 1, 1),
                    f"{clip_id}/intrinsics_norm": torch.eye(3).repeat(NUM_LATENTS, 1, 1),
                    f"{clip_id}/labels": torch.zeros(NUM_LATENTS, dtype=torch.long),
                    f"{clip_id}/vision": torch.zeros(1, 8),
                }
            )
            in_shard.append(
                PreparedClip(
                    id=clip_id,
                    split="train",
                    shard=shard,
                    prompt="",
                    prompt_key="p",
                    num_frames=frames,
                    num_latents=NUM_LATENTS,
                    labels_from="actions",
                    poses_from="actions",
                )  # fmt: skip
            )
        metadata = {"clips": json.dumps([record.model_dump(mode="json") for record in in_shard])}
        write_safetensors_atomic(directory / shard, tensors, metadata)
        records += in_shard
    write_safetensors_atomic(directory / NEGATIVE_NAME, {"llm": torch.zeros(1, 8), "byt5": torch.zeros(0, 8)})
    if with_index:
        index = DatasetIndex(complete=True, fps=16, width=32, height=32, latent_channels=4, scaling_factor=1.0,
                             vocabulary={}, model_dir="", clips=records)  # fmt: skip
        save_index(directory, index)
    return directory


def draws(builder: SampleBuilder, steps: range, world: int = 1, rank: int = 0, batch_size: int = 2) -> list:
    """Each step's window length and its samples' first latent values (random per clip: they name the clip)."""
    picked = []
    for step in steps:
        batch = builder.batch(step, 0, 1, rank, world, batch_size)
        picked.append((batch.latents.shape[2], [float(batch.latents[row, 0, 0, 0, 0]) for row in range(batch_size)]))
    return picked


def test_mix_shares_match_the_weights_deterministically_by_seed():
    weights = [3.0, 1.0, 0.5]
    mix = Mix(weights, seed=7)
    located = [mix.locate(index) for index in range(20 * MIX_BLOCK)]
    counts = Counter(dataset for dataset, _ in located)
    for dataset, weight in enumerate(weights):
        assert abs(counts[dataset] / len(located) - weight / sum(weights)) < 2 / MIX_BLOCK
        # each dataset's draws are numbered 0, 1, 2, ... without gaps or repeats
        numbers = sorted(draw for chosen, draw in located if chosen == dataset)
        assert numbers == list(range(counts[dataset]))
    # stateless: any index alone gives the same answer, and another seed another order
    assert Mix(weights, seed=7).locate(3000) == located[3000]
    assert [Mix(weights, seed=8).locate(index) for index in range(200)] != located[:200]


def test_mixed_datasets_are_sampled_by_weight_and_with_the_curriculum_window(tmp_path):
    primary = write_dataset(tmp_path / "a", "a", 2, 3)
    other = write_dataset(tmp_path / "b", "b", 2, 3)
    data = DataSection(
        path=str(primary),
        mix=[{"path": str(primary), "weight": 3.0}, {"path": str(other), "weight": 1.0}],
        curriculum="0:8,5:12",
    )
    builder = SampleBuilder(PreparedDataset(primary), METHOD, seed=1, cfg_dropout=0.0, data=data)
    origins = Counter(builder.clip_for(index).record.id[0] for index in range(4 * MIX_BLOCK))
    assert origins["a"] / sum(origins.values()) == pytest.approx(0.75, abs=0.01)
    windows = [builder.batch(step, 0, 1, 0, 1, 1).latents.shape[2] for step in range(8)]
    assert windows == [8] * 5 + [12] * 3
    # the window's latents are the clip's first ones (a window sample), loss on all of them
    batch = builder.batch(0, 0, 1, 0, 1, 1)
    assert batch.loss_mask.shape == (1, 8)


def test_curriculum_config_is_checked_against_the_method():
    base = {
        "model": {"model_dir": "m"},
        "data": {"path": "d", "curriculum": "0:8,100:16"},
        "method": {"name": "ar", "window_latents": 12, "memory_probability": 0.0},
        "max_steps": 1,
        "checkpoint": {"output_dir": "o"},
    }
    with pytest.raises(ValueError, match="curriculum window 16 exceeds method.window_latents 12"):
        TrainConfig.model_validate(base)
    base["data"]["curriculum"] = "0:4"
    with pytest.raises(ValueError, match="curriculum window 4: .*two chunks"):
        TrainConfig.model_validate(base)
    base["data"]["curriculum"] = [{"step": 5, "window_latents": 8}]
    with pytest.raises(ValueError, match="first stage must start at step 0"):
        TrainConfig.model_validate(base)


def test_stream_opens_one_shard_at_a_time_and_never_an_index(tmp_path, monkeypatch):
    import safetensors

    directory = write_dataset(tmp_path / "big", "s", 12, 3, with_index=False)
    opened: list[str] = []
    real_open = safetensors.safe_open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", counting_open)
    stream = ShardStream(directory, 12, [0])
    first = [stream.clip(draw).record.id for draw in range(4)]
    # four draws of three-clip shards: two shard files were read, not twelve
    assert len(opened) == 2 and len(set(opened)) == 2
    later = [stream.clip(draw).record.id for draw in range(4, 36)]
    # a whole epoch covers every clip once, one shard file opened per shard
    assert sorted(first + later) == sorted(f"s-{shard:03d}-{clip}" for shard in range(12) for clip in range(3))
    assert len(opened) == 12
    with pytest.raises(RuntimeError, match="must increase"):
        stream.clip(3)


def test_streamed_training_resumes_exactly_on_every_rank(tmp_path):
    directory = write_dataset(tmp_path / "big", "s", 6, 2)
    data = DataSection(path=str(directory), streaming=True)

    def builder():
        return SampleBuilder(PreparedDataset(directory), METHOD, seed=2, cfg_dropout=0.0, data=data)

    world = 2
    continuous = [builder() for _ in range(world)]
    expected = [draws(continuous[rank], range(10), world, rank) for rank in range(world)]

    interrupted = [builder() for _ in range(world)]
    for rank in range(world):
        draws(interrupted[rank], range(5), world, rank)
    saved = json.loads(json.dumps(interrupted[0].state_dict()))  # what rank 0's checkpoint keeps
    for rank in range(world):
        resumed = builder()
        resumed.load_state_dict(saved)
        assert draws(resumed, range(5, 10), world, rank) == expected[rank][5:]
    # and the ranks drew different samples
    assert expected[0] != expected[1]


def test_wandb_off_is_never_imported_and_on_without_the_package_is_one_line(tmp_path, monkeypatch):
    config = TrainConfig.model_validate(
        {"model": {"model_dir": "m"}, "data": {"path": "d"}, "max_steps": 1, "checkpoint": {"output_dir": "o"}}
    )
    assert config.logging.wandb is False
    script = (
        "import sys; from worker.training.tracking import start_wandb; "
        "from worldplay_cli.contract.training import TrainConfig; import json; "
        f"config = TrainConfig.model_validate_json({config.model_dump_json()!r}); "
        f"assert start_wandb(config, {str(tmp_path)!r}) is None; print('wandb' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"

    import importlib.util

    from worker.training.tracking import start_wandb

    enabled = config.model_copy(update={"logging": config.logging.model_copy(update={"wandb": True})})
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(BadInput) as error:
            start_wandb(enabled, tmp_path)
        assert error.value.message == "logging.wandb is on but the wandb package is not installed"
        assert error.value.hint == "pip install wandb, or set logging.wandb false"
    else:
        monkeypatch.setenv("WANDB_MODE", "offline")
        tracker = start_wandb(enabled, tmp_path)
        tracker.log({"kind": "train", "step": 1, "loss": 0.5})
        tracker.finish()
        assert any((tmp_path / "wandb").iterdir())


def test_a_missing_mixed_dataset_is_refused_before_the_run(tmp_path):
    from tests.train_fixtures import tiny_model_dir
    from worldplay_cli.contract.training import check_paths

    primary = write_dataset(tmp_path / "a", "a", 1, 1)
    config = TrainConfig.model_validate(
        {
            "model": {"model_dir": str(tiny_model_dir())},
            "data": {"path": str(primary), "mix": [{"path": str(primary)}, {"path": str(tmp_path / "gone")}]},
            "max_steps": 1,
            "checkpoint": {"output_dir": str(tmp_path / "run")},
        }
    )
    with pytest.raises(BadInput, match="data.mix dataset .*gone does not exist"):
        check_paths(config)
