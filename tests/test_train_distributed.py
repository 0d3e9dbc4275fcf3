"""FSDP2 on two real gloo ranks (torchrun processes) takes the same step as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from train_fixtures import train_config_data


def _run(tmp_path, name: str, processes: int, **sections) -> list[dict]:
    config = tmp_path / f"{name}.yaml"
    checkpoint = {"output_dir": str(tmp_path / name), "every_steps": 1, "keep_last": None}
    data = train_config_data(tmp_path / name, max_steps=2, checkpoint=checkpoint, **sections)
    data["data"]["cfg_dropout"] = 0.5
    config.write_text(yaml.safe_dump(data))
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    result = subprocess.run(
        [*launcher, "-m", "worker.training", "train", str(config), "--events"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_two_fsdp_ranks_match_one_process(tmp_path):
    from safetensors.torch import load_file

    # one process accumulating two micro-batches draws exactly the samples two ranks draw
    single = _run(tmp_path, "single", 1, grad_accumulation=2)
    sharded = _run(tmp_path, "sharded", 2, fsdp=True)

    def losses(records):
        return [(record["loss"], record["grad_norm"]) for record in records if record["kind"] == "train"]

    assert len(losses(single)) == 2
    for (loss_one, norm_one), (loss_two, norm_two) in zip(losses(single), losses(sharded)):
        assert loss_two == pytest.approx(loss_one, rel=1e-5) and norm_two == pytest.approx(norm_one, rel=1e-5)
    for step in (1, 2):
        one = load_file(str(tmp_path / "single" / f"checkpoint-{step}" / "transformer" / "diffusion_pytorch_model.safetensors"))
        two = load_file(str(tmp_path / "sharded" / f"checkpoint-{step}" / "transformer" / "diffusion_pytorch_model.safetensors"))
        assert one.keys() == two.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-5)
    # only rank 0 reports
    assert sum(record["kind"] == "summary" for record in sharded) == 1
