"""Ulysses sequence parallel: two real rank processes over gloo compute what one process computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golden_util import load_io
from transformer_util import load_golden_model
from worker.models.transformer import PromptEmbeddings
from worker.parallel.launch import join_ranks, spawn_ranks
from worker.parallel.ulysses import SequenceParallelError, TokenShard, check_sp_degree, valid_sp_degrees

TESTS_DIR = Path(__file__).parent


def run_cases(model) -> dict[str, torch.Tensor]:
    """Every pass sequence parallelism must reproduce, on `model` (whatever its attention processor)."""
    io = load_io("tiny_transformer_io.safetensors")
    x, t, viewmats, ks, action = io["x"], io["t"], io["viewmats"], io["Ks"], io["action"]
    prompt = PromptEmbeddings(io["text"], io["text_mask"], io["byt5"], io["byt5_mask"], io["vision"])
    outputs = {}
    with torch.no_grad():
        # 1. golden shapes: 4x6 grid, 24 tokens per frame split evenly
        outputs["bi"] = model.forward_bi(x, t, prompt, viewmats, ks, action)
        cache = model.forward_text(prompt, 0.0)
        outputs["ar_first_chunk"] = model.forward_chunk(
            x[:, :, :2], t, viewmats[:, :2], ks[:, :2], action[:, :2], cache
        )
        cache = model.forward_context(x[:, :, :2], viewmats[:, :2], ks[:, :2], action[:, :2], cache, timestep=14.0)
        outputs["ar_chunk"] = model.forward_chunk(x[:, :, 2:], t, viewmats[:, 2:], ks[:, 2:], action[:, 2:], cache)
        # 2. uneven: a 3x5 grid (15 tokens per frame, padded to 16), CFG-like batch of two prompts with
        #    different text lengths (so the text key mask is in play), per-frame timesteps
        x2 = torch.cat([x, 0.5 * x])[:, :, :, :3, :5]
        text_mask = torch.cat([io["text_mask"], io["text_mask"] * (torch.arange(10) < 4)])
        prompt2 = PromptEmbeddings(
            io["text"].expand(2, -1, -1), text_mask, io["byt5"].expand(2, -1, -1),
            io["byt5_mask"].expand(2, -1), io["vision"].expand(2, -1, -1),
        )  # fmt: skip
        viewmats2, ks2, action2 = viewmats.expand(2, -1, -1, -1), ks.expand(2, -1, -1, -1), action.expand(2, -1)
        per_frame = torch.tensor([[900.0, 900.0, 800.0, 800.0], [500.0, 500.0, 400.0, 400.0]])
        outputs["bi_uneven"] = model.forward_bi(
            x2, per_frame, prompt2, viewmats2, ks2, action2, text_timestep=per_frame[:, 0]
        )
        cache = model.forward_text(prompt2, 0.0)
        cache = model.forward_context(x2[:, :, :3], viewmats2[:, :3], ks2[:, :3], action2[:, :3], cache, timestep=14.0)
        outputs["ar_chunk_uneven"] = model.forward_chunk(
            x2[:, :, 3:], 600.0, viewmats2[:, 3:], ks2[:, 3:], action2[:, 3:], cache
        )
        # 3. the chunk-causal training pass on the uneven grid: two chunks of two latents
        cache = model.forward_text(prompt2, 0.0)
        outputs["chunk_causal_uneven"] = model.forward_chunk_causal(
            x2, per_frame, viewmats2, ks2, action2, cache, chunk_latents=2
        )
    return outputs


def rank_main(out_dir: str) -> None:
    """One rank: join the group from the torchrun variables, run the cases sequence-parallel."""
    from safetensors.torch import save_file

    from worker.parallel.launch import exit_rank, init_from_env
    from worker.parallel.ulysses import UlyssesAttention

    info = init_from_env(timeout_s=30)
    model = load_golden_model()
    model.set_attention_processor(UlyssesAttention())
    outputs = run_cases(model)
    save_file({name: tensor.contiguous() for name, tensor in outputs.items()}, f"{out_dir}/rank{info.rank}.safetensors")
    exit_rank(0)


@pytest.mark.slow
def test_two_ranks_over_gloo_equal_one_process(tmp_path):
    from safetensors.torch import load_file

    command = [
        "-c",
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_parallel; test_parallel.rank_main({str(tmp_path)!r})",
    ]
    processes = spawn_ranks(command, world_size=2, env={"OMP_NUM_THREADS": "1"}, log_dir=tmp_path)
    codes = join_ranks(processes, timeout_s=120)
    logs = "\n".join((tmp_path / f"rank{rank}.log").read_text() for rank in range(2))
    assert codes == [0, 0], logs

    expected = run_cases(load_golden_model())
    io = load_io("tiny_transformer_io.safetensors")
    torch.testing.assert_close(expected["bi"], io["out_bi"], atol=1e-4, rtol=1e-4)
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert set(got) == set(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_sp_degree_must_split_the_heads():
    assert valid_sp_degrees(16) == [1, 2, 4, 8, 16]
    check_sp_degree(16, 8)
    with pytest.raises(SequenceParallelError, match=r"16 attention heads.*\[1, 2, 4, 8, 16\]"):
        check_sp_degree(16, 3)


def test_token_shard_pads_uneven_frames_and_masks_the_padding():
    shards = [TokenShard(tokens_per_frame=5, world=2, rank=rank) for rank in range(2)]
    frame = torch.arange(1, 6).view(1, 5)
    assert shards[0].take(frame, dim=1).tolist() == [[1, 2, 3]]
    assert shards[1].take(frame, dim=1).tolist() == [[4, 5, 0]]
    # two frames gathered rank-major: rank 0's [f0: 3 tokens, f1: 3 tokens], then rank 1's
    valid = shards[0].gathered_valid(frames=2, device=torch.device("cpu"))
    assert valid.tolist() == [True] * 6 + [True, True, False, True, True, False]
    assert TokenShard(6, 2, 0).gathered_valid(2, torch.device("cpu")) is None


def test_ranks_of_a_failed_group_are_stopped(tmp_path):
    """One rank exits with an error while the other waits for it in a collective: the launcher ends both."""
    program = (
        "import os, sys; from worker.parallel.launch import init_from_env; import torch, torch.distributed as dist; "
        "info = init_from_env(timeout_s=60); "
        "sys.exit(3) if info.rank == 1 else dist.barrier()"
    )
    processes = spawn_ranks(["-c", program], world_size=2, log_dir=tmp_path)
    codes = join_ranks(processes, timeout_s=60, grace_s=2)
    assert codes[1] == 3
    assert codes[0] != 0


if __name__ == "__main__":
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", __file__]))
