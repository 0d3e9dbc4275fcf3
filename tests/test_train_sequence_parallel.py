"""Sequence-parallel training (Ulysses over a dp x sp mesh of real gloo ranks) takes the steps one process takes.

The gradient test drives the tiny golden transformer through every pass training uses (bidirectional,
chunk-causal, context + chunk, on a grid whose frames split unevenly) with the differentiable collectives of
`worker.parallel.comm`; the training tests run the real loop under torchrun.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from golden_util import load_io
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

    from worker.parallel.launch import init_from_env
    from worker.parallel.ulysses import UlyssesAttention

    info = init_from_env(timeout_s=60)
    model = load_golden_model()
    model.set_attention_processor(UlyssesAttention())
    gradients = gradient_cases(model)
    for gradient in gradients.values():
        dist.all_reduce(gradient)
        gradient /= info.world_size
    save_file({name: g.contiguous() for name, g in gradients.items()}, f"{out_dir}/rank{info.rank}.safetensors")
    dist.destroy_process_group()


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


if __name__ == "__main__":
    sys.exit(pytest.main(["-q", __file__]))
