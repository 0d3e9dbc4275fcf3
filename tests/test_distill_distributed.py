"""Self-forcing on two real gloo ranks (torchrun) takes the steps one process takes accumulating the same two
micro-batches: student, critic and their losses, with FSDP2 over student, teacher and critic."""

from __future__ import annotations

import pytest
import torch
import yaml

from train_fixtures import run_training_process, train_config_data

METHOD = {
    "name": "self_forcing",
    "window_latents": 8,
    "memory_points": 2000,
    "real_score_guidance_scale": 2.0,
    "teacher": {"init": "ar", "attention": "chunk_causal"},
    "critic": {"learning_rate": 1e-3},
}


def _run(directory, processes: int, **sections) -> list[dict]:
    config = directory / "train.yaml"
    checkpoint = {"output_dir": str(directory / "run"), "every_steps": 2, "keep_last": None}
    data = train_config_data(directory / "run", method=METHOD, max_steps=2, checkpoint=checkpoint, **sections)
    config.write_text(yaml.safe_dump(data))
    return run_training_process(config, processes)


@pytest.mark.slow
def test_two_fsdp_ranks_distill_like_one_process(tmp_path):
    """FSDP is the strict case: every rank must run the same forwards (shared exit-step draws); data-parallel
    averaging of replicated gradients is the loop's own, tested for fine-tuning (test_train_distributed)."""
    from safetensors.torch import load_file

    single_dir = tmp_path / "single"
    single_dir.mkdir()
    single = _run(single_dir, 1, grad_accumulation=2)
    parallel = _run(tmp_path, 2, fsdp=True)
    keys = ("critic_loss", "generator_loss", "grad_norm", "critic_grad_norm")
    one = [record for record in single if record["kind"] == "train"]
    two = [record for record in parallel if record["kind"] == "train"]
    assert len(one) == len(two) == 2
    for left, right in zip(one, two):
        for key in keys:
            assert right[key] == pytest.approx(left[key], rel=1e-4), key
    weights = "checkpoint-2/ar_distilled_action_model/diffusion_pytorch_model.safetensors"
    student_one, student_two = load_file(str(single_dir / "run" / weights)), load_file(str(tmp_path / "run" / weights))
    for name in student_one:
        torch.testing.assert_close(student_two[name], student_one[name], atol=1e-6, rtol=1e-5)
    critic_one = torch.load(single_dir / "run" / "checkpoint-2" / "training_state.pt", weights_only=True)["critic"]
    critic_two = torch.load(tmp_path / "run" / "checkpoint-2" / "training_state.pt", weights_only=True)["critic"]
    for name, tensor in critic_one["weights"].items():
        torch.testing.assert_close(critic_two["weights"][name], tensor, atol=1e-6, rtol=1e-5)
