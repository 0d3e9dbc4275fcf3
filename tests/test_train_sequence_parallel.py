"""Sequence-parallel training (Ulysses over a dp x sp mesh of real gloo ranks) takes the steps one process takes.

The gradient test drives the tiny golden transformer through every pass training uses (bidirectional,
chunk-causal, context + chunk, on a grid whose frames split unevenly) with the differentiable collectives of
`worker.parallel.comm`; the training tests run the real loop under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from golden_util import load_io
from train_fixtures import run_training_process, train_config_data
from transformer_util import golden_prompt, load_golden_model
from worker.models.transformer import PromptEmbeddings

TESTS_DIR = Path(__file__).parent


def gradient_cases(model) -> dict[str, torch.Tensor]:
    """The parameter gradients of a loss over every pass training runs, on `model` (whatever its processor)."""
    io = load_io("tiny_transformer_io.safetensors")
    # a 3x5 grid: 15 tokens per frame, padded to 16 over two ranks; two prompts of different lengths
    x = torch.cat([io["x"], 0.5 * io["x"]])[:, :, :, :3, :5]
    text_mask = torch.cat([io["text_mask"], io["text_mask"] * (torch.arange(10) < 4)])
    base = golden_prompt(io)
    prompt = PromptEmbeddings(
        base.llm.expand(2, -1, -1), text_mask, base.byt5.expand(2, -1, -1), base.byt5_mask.expand(2, -1),
        base.vision.expand(2, -1, -1),
    )  # fmt: skip
    viewmats, ks, action = (
        io["viewmats"].expand(2, -1, -1, -1),
        io["Ks"].expand(2, -1, -1, -1),
        io["action"].expand(2, -1),
    )
    per_frame = torch.tensor([[900.0, 900.0, 800.0, 800.0], [500.0, 500.0, 400.0, 400.0]])
    weights = torch.Generator().manual_seed(0)
    model.zero_grad(set_to_none=True)
    outputs = [model.forward_bi(x, per_frame, prompt, viewmats, ks, action, text_timestep=per_frame[:, 0])]
    cache = model.forward_text(prompt, 0.0)
    outputs.append(model.forward_chunk_causal(x, per_frame, viewmats, ks, action, cache, chunk_latents=2))
    cache = model.forward_context(x[:, :, :2], viewmats[:, :2], ks[:, :2], action[:, :2], cache, timestep=14.0)
    outputs.append(model.forward_chunk(x[:, :, 2:], 600.0, viewmats[:, 2:], ks[:, 2:], action[:, 2:], cache))
    loss = sum((output * torch.randn(output.shape, generator=weights)).sum() for output in outputs)
    loss.backward()
    return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}


def gradient_rank_main(out_dir: str) -> None:
    """One rank of the gradient test: its gradients averaged over the group, as the training loop averages."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    from worker.parallel.launch import exit_rank, init_from_env
    from worker.parallel.ulysses import UlyssesAttention

    info = init_from_env(timeout_s=60)
    model = load_golden_model()
    model.set_attention_processor(UlyssesAttention())
    gradients = gradient_cases(model)
    for gradient in gradients.values():
        dist.all_reduce(gradient)
        gradient /= info.world_size
    save_file({name: g.contiguous() for name, g in gradients.items()}, f"{out_dir}/rank{info.rank}.safetensors")
    exit_rank(0)


@pytest.mark.slow
def test_ulysses_gradients_over_two_ranks_equal_one_process(tmp_path):
    from safetensors.torch import load_file

    from worker.parallel.launch import join_ranks, spawn_ranks

    command = [
        "-c",
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_train_sequence_parallel as t; "
        f"t.gradient_rank_main({str(tmp_path)!r})",
    ]
    processes = spawn_ranks(command, world_size=2, env={"OMP_NUM_THREADS": "1"}, log_dir=tmp_path)
    codes = join_ranks(processes, timeout_s=120)
    assert codes == [0, 0], "\n".join((tmp_path / f"rank{rank}.log").read_text() for rank in range(2))
    expected = gradient_cases(load_golden_model())
    assert len(expected) > 50
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert set(got) == set(expected)
        for name, gradient in expected.items():
            torch.testing.assert_close(got[name], gradient, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------------------------------
# The training loop on a dp x sp mesh


def _write_config(directory: Path, max_steps: int, **sections) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = {"output_dir": str(directory / "run"), "every_steps": 1, "keep_last": None}
    data = train_config_data(directory / "run", max_steps=max_steps, checkpoint=checkpoint, **sections)
    data["data"]["cfg_dropout"] = 0.5
    config = directory / "train.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def _one_process(directory: Path, max_steps: int, **sections) -> list[dict]:
    """The reference: the loop in this process (one rank)."""
    from worker.training.trainer import Hooks, Trainer
    from worldplay_cli.contract.training import load_train_config

    records: list[dict] = []
    Trainer(load_train_config(_write_config(directory, max_steps, **sections)), hooks=Hooks(records.append)).run()
    return records


def _ranks(directory: Path, processes: int, max_steps: int, **sections) -> list[dict]:
    return run_training_process(_write_config(directory, max_steps, **sections), processes)


def _assert_same_steps(one: list[dict], many: list[dict], keys: tuple[str, ...]) -> None:
    one, many = ([r for r in records if r["kind"] == "train"] for records in (one, many))
    assert one and len(one) == len(many)
    for left, right in zip(one, many):
        for key in keys:
            assert right[key] == pytest.approx(left[key], rel=1e-5), (right["step"], key)


def _assert_same_weights(one: Path, many: Path) -> None:
    """Equal within a tenth of the learning rate (1e-3): Adam's first steps move a weight by about the
    learning rate whatever its gradient's size, so where the gradient is round-off (1e-9) the summation
    order of the split attention may move it differently; loss and grad norm agree to 1e-5."""
    from safetensors.torch import load_file

    expected, got = load_file(str(one)), load_file(str(many))
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-4, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.mark.slow
def test_sp2_fine_tuning_matches_one_process(tmp_path):
    """Two ranks of one sequence-parallel group (data parallel over one group: replicated gradients averaged)
    take the steps one process takes on the same sample: the bidirectional method's forward_bi."""
    method = {"name": "bi", "window_latents": 8}
    one = _one_process(tmp_path / "one", 2, method=method)
    two = _ranks(tmp_path / "sp2", 2, 2, method=method, sp_size=2)
    _assert_same_steps(one, two, ("loss", "grad_norm"))
    _assert_same_weights(tmp_path / "one/run/checkpoint-2" / WEIGHTS, tmp_path / "sp2/run/checkpoint-2" / WEIGHTS)


@pytest.mark.slow
def test_dp2_sp2_fsdp_matches_one_process_on_the_global_batch(tmp_path):
    """Four ranks, FSDP over all of them, two groups of two splitting each sample's tokens: the AR method's
    steps equal one process accumulating the two groups' micro-batches."""
    one = _one_process(tmp_path / "one", 2, grad_accumulation=2)
    four = _ranks(tmp_path / "dp2sp2", 4, 2, fsdp=True, sp_size=2)
    _assert_same_steps(one, four, ("loss", "grad_norm"))
    _assert_same_weights(tmp_path / "one/run/checkpoint-2" / WEIGHTS, tmp_path / "dp2sp2/run/checkpoint-2" / WEIGHTS)


DISTILLATION = {
    "self_forcing": {"name": "self_forcing", "window_latents": 8},
    "streaming_long_tuning": {
        "name": "streaming_long_tuning",
        "window_latents": 16,
        "streaming_chunk_size": 8,
        "streaming_fixed_overlap_latents": 4,
    },
    "context_forcing": {"name": "context_forcing", "window_latents": 16, "score_chunks": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DISTILLATION))
def test_sp2_distillation_matches_one_process(tmp_path, name):
    """Each distillation method's iteration (student rollout, teacher and critic scores, both updates) on a
    sequence-parallel group of two equals one process's."""
    method = {
        **DISTILLATION[name],
        "memory_points": 2000,
        "real_score_guidance_scale": 2.0,
        "teacher": {"init": "ar", "attention": "chunk_causal"},
        "critic": {"learning_rate": 1e-3},
    }
    one = _one_process(tmp_path / "one", 1, method=method)
    two = _ranks(tmp_path / "sp2", 2, 1, method=method, sp_size=2)
    _assert_same_steps(one, two, ("critic_loss", "generator_loss", "grad_norm", "critic_grad_norm"))
    student = "checkpoint-1/ar_distilled_action_model/diffusion_pytorch_model.safetensors"
    _assert_same_weights(tmp_path / "one/run" / student, tmp_path / "sp2/run" / student)
    critics = [torch.load(d / "run/checkpoint-1/training_state.pt", weights_only=True)["critic"] for d in
               (tmp_path / "one", tmp_path / "sp2")]  # fmt: skip
    for parameter, tensor in critics[0]["weights"].items():
        torch.testing.assert_close(critics[1]["weights"][parameter], tensor, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Several nodes


def _worldplay(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "worldplay_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _finished(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.mark.slow
def test_two_nodes_train_into_one_directory_and_resume_on_one_node(tmp_path):
    """Two `worldplay train --nnodes 2` launches (one process each) meet at one rendezvous on 127.0.0.1 and
    train with FSDP into one run directory; its checkpoint resumes on one node, one process accumulating the
    two micro-batches the nodes drew, and takes exactly the step the two nodes took."""
    from worker.parallel.launch import free_port

    config = _write_config(tmp_path / "nodes", 2, fsdp=True)
    rendezvous = f"127.0.0.1:{free_port()}"
    nodes = [
        _worldplay("train", str(config), "--nnodes", "2", "--node-rank", str(rank), "--rdzv", rendezvous, "--json")
        for rank in (1, 0)
    ]
    summaries = [_finished(node) for node in nodes]
    # every node's command reports the run
    assert [summary["step"] for summary in summaries] == [2, 2]
    run = tmp_path / "nodes" / "run"
    assert summaries[0]["checkpoint"] == summaries[1]["checkpoint"] == str(run / "checkpoint-2")
    assert json.loads((run / "checkpoint-2" / "metadata.json").read_text())["world_size"] == 2
    assert not list(run.glob(".shared-check-*"))

    resumed = tmp_path / "resumed"
    overrides = ["--set", "grad_accumulation=2", "--set", f"checkpoint.output_dir={resumed}"]
    summary = _finished(_worldplay("train", "resume", str(run / "checkpoint-1"), *overrides, "--json"))
    assert summary["step"] == 2
    _assert_same_weights(run / "checkpoint-2" / WEIGHTS, resumed / "checkpoint-2" / WEIGHTS)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nnodes", "2"], "--nnodes needs --rdzv HOST:PORT"),
        (["--nnodes", "2", "--rdzv", "node0"], "--rdzv 'node0' is not HOST:PORT"),
        (["--nnodes", "2", "--rdzv", "node0:29500", "--node-rank", "2"], "--node-rank 2 is not in 0..1"),
        (["--rdzv", "node0:29500"], "--rdzv and --node-rank are for multi-node runs"),
        (["--nnodes", "2", "--rdzv", "node0:29500", "--queue"], "a multi-node run starts in the foreground"),
        (["--set", "sp_size=2"], "--gpus 1 is not a multiple of sp_size 2"),
    ],
)
def test_bad_launch_options_are_one_line_errors(tmp_path, capsys, args, message):
    from worldplay_cli.app import main

    config = _write_config(tmp_path, 1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["train", str(config), *args])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "run").exists()


SHARED_CHECK_PROGRAM = """
import sys
from pathlib import Path
import torch
from worker.parallel.launch import exit_rank
from worker.training.trainer import check_shared_directory, distributed_context
from worldplay_cli.contract.errors import BadInput

context = distributed_context()
base = Path(sys.argv[1])
check_shared_directory(context, base)
print("SHARED OK", flush=True)
# rank 1 as a node whose copy of the path is another (node-local) directory
local = base / ("node-local" if context.rank == 1 else "")
local.mkdir(exist_ok=True)
try:
    check_shared_directory(context, local)
except BadInput as error:
    print(f"ERROR {error.message} | {error.hint}", flush=True)
exit_rank(0)
"""


def test_a_run_directory_not_shared_by_every_node_is_a_clear_error(tmp_path):
    from worker.parallel.launch import join_ranks, spawn_ranks

    logs = tmp_path / "logs"
    logs.mkdir()
    processes = spawn_ranks(["-c", SHARED_CHECK_PROGRAM, str(tmp_path)], 2, {"OMP_NUM_THREADS": "1"}, logs)
    assert join_ranks(processes, timeout_s=120) == [0, 0]
    for rank in range(2):
        log = (logs / f"rank{rank}.log").read_text()
        assert "SHARED OK" in log
        error = log.split("ERROR ", 1)[1].splitlines()[0]
        assert ", written by rank 0 on " in error and "is not visible to rank 1 on" in error, log
        assert error.endswith("| the output directory must be on a filesystem all nodes share")
    assert not list(tmp_path.glob(".shared-check-*"))


if __name__ == "__main__":
    sys.exit(pytest.main(["-q", __file__]))
