"""Several real gloo ranks (torchrun processes) take the same steps as one process on the same global batch:
data parallel (gradients averaged over the ranks) and FSDP2, each for full and LoRA fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from train_fixtures import run_training_process, train_config_data

LORA = {"rank": 4, "alpha": 8.0}


def _run(directory, processes: int, **sections) -> list[dict]:
    config = directory / "train.yaml"
    checkpoint = {"output_dir": str(directory / "run"), "every_steps": 1, "keep_last": None}
    data = train_config_data(directory / "run", max_steps=2, checkpoint=checkpoint, **sections)
    data["data"]["cfg_dropout"] = 0.5
    config.write_text(yaml.safe_dump(data))
    return run_training_process(config, processes)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The one-process reference run per fine-tuning kind, shared by the parallel variants."""
    runs = {}

    def run(lora: bool):
        if lora not in runs:
            directory = tmp_path_factory.mktemp("lora" if lora else "full")
            # one process accumulating two micro-batches draws exactly the samples two ranks draw
            runs[lora] = directory, _run(directory, 1, grad_accumulation=2, lora=LORA if lora else None)
        return runs[lora]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_ranks_match_one_process(tmp_path, single_process, fsdp, lora):
    from safetensors.torch import load_file

    single_dir, single = single_process(lora)
    parallel = _run(tmp_path, 2, fsdp=fsdp, lora=LORA if lora else None)

    def losses(records):
        return [(record["loss"], record["grad_norm"]) for record in records if record["kind"] == "train"]

    assert len(losses(single)) == 2 and len(losses(parallel)) == 2
    for (loss_one, norm_one), (loss_two, norm_two) in zip(losses(single), losses(parallel)):
        assert loss_two == pytest.approx(loss_one, rel=1e-5) and norm_two == pytest.approx(norm_one, rel=1e-5)
    for step in (1, 2):
        weights = f"checkpoint-{step}/transformer/diffusion_pytorch_model.safetensors"
        one = load_file(str(single_dir / "run" / weights))
        two = load_file(str(tmp_path / "run" / weights))
        assert one.keys() == two.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-5)
    # only rank 0 reports
    assert sum(record["kind"] == "summary" for record in parallel) == 1


RANK_PROGRAM = """
import json, torch
from torch import nn
from worker.parallel.launch import exit_rank
from worker.training.trainer import distributed_context

context = distributed_context()
reached_everywhere, reached_on_rank_0, reached_nowhere = (nn.Parameter(torch.zeros(size)) for size in (3, 2, 1))
reached_everywhere.grad = torch.full((3,), float(context.rank + 1))
if context.rank == 0:
    reached_on_rank_0.grad = torch.tensor([2.0, 4.0])
# two-element buckets: the reduction spans three of them
context.average_gradients([reached_everywhere, reached_on_rank_0, reached_nowhere], bucket_elements=2)
grads = [None if p.grad is None else p.grad.tolist() for p in (reached_everywhere, reached_on_rank_0, reached_nowhere)]
print("GRADS " + json.dumps(grads), flush=True)
exit_rank(0)
"""


def test_gradient_averaging_over_gloo_ranks(tmp_path):
    from worker.parallel.launch import join_ranks, spawn_ranks

    processes = spawn_ranks(["-c", RANK_PROGRAM], 2, env={"OMP_NUM_THREADS": "1"}, log_dir=tmp_path)
    assert join_ranks(processes, timeout_s=120) == [0, 0]
    for rank in range(2):
        log = (tmp_path / f"rank{rank}.log").read_text()
        grads = json.loads(log.split("GRADS ", 1)[1].splitlines()[0])
        # a parameter one rank's samples missed counts as zero there; one nobody reached keeps no gradient
        assert grads == [[1.5, 1.5, 1.5], [1.0, 2.0], None], log
