"""What a distillation run leaves: the drift score, teacher agreement in validation, and the student in the
official `ar_distilled_action_model` layout, which the pipeline runs as the `ar-distilled` variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_fixtures import tiny_model_dir, train_config_data
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import TrainConfig, validate_config


def test_drift_is_zero_for_a_steady_look_and_grows_as_late_chunks_wash_out():
    from trajectories.evaluation.drift import chunk_bounds, drift_curve, drift_score

    # 4-latent chunks: 13 frames, then 16 per chunk
    assert chunk_bounds(45, 4) == [(0, 13), (13, 29), (29, 45)]
    rng = np.random.default_rng(0)
    steady = rng.integers(0, 256, (1, 8, 8, 3)).repeat(45, axis=0).astype(np.uint8)
    assert drift_score(steady, 4) == 0.0
    washed = steady.copy()
    washed[29:] = np.clip(washed[29:].astype(int) + 120, 0, 255)
    curve = drift_curve(washed, 4)
    assert curve[:2] == [0.0, 0.0] and 0.5 < curve[2] <= 1.0
    assert drift_score(washed, 4) == curve[2]
    half = steady.copy()
    half[29:] = np.clip(half[29:].astype(int) + 30, 0, 255)
    assert 0 < drift_score(half, 4) < drift_score(washed, 4)


def test_teacher_agreement_needs_a_distillation_method(tmp_path):
    data = train_config_data(tmp_path, validation={"metrics": ["teacher_agreement"]})
    with pytest.raises(BadInput, match="teacher_agreement needs a distillation method"):
        validate_config(data)


@pytest.mark.slow
def test_a_self_forcing_run_validates_against_its_teacher_and_exports_an_ar_distilled_model(tmp_path):
    from safetensors.torch import load_file

    from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline
    from worker.training.export import export_model_dir
    from worker.training.trainer import Hooks, Trainer

    method = {
        "name": "self_forcing",
        "window_latents": 8,
        "memory_points": 2000,
        "teacher": {"init": "ar", "attention": "chunk_causal", "sampling_steps": 6, "guidance": 2.0},
        "critic": {"learning_rate": 1e-3},
    }
    validation = {
        "every_steps": 1,
        "run_at_start": False,
        "max_clips": 1,
        "sampling_steps": 4,
        "num_latents": 8,
        "metrics": ["psnr", "drift", "teacher_agreement"],
    }
    data = train_config_data(tmp_path / "run", method=method, validation=validation, max_steps=1)
    data["ema"] = {"decay": 0.9}
    records = []
    Trainer(TrainConfig.model_validate(data), hooks=Hooks(records.append)).run()
    validation_record = next(record for record in records if record["kind"] == "validation")
    for key in ("psnr", "drift", "reference_drift", "teacher_latent_mse", "teacher_psnr"):
        assert np.isfinite(validation_record[key]), key
    assert validation_record["teacher_latent_mse"] > 0

    checkpoint = tmp_path / "run" / "checkpoint-1"
    student = checkpoint / "ar_distilled_action_model" / "diffusion_pytorch_model.safetensors"
    ema = load_file(str(checkpoint / "ema" / "diffusion_pytorch_model.safetensors"))
    weight = "double_blocks.0.img_attn_q.weight"
    assert torch.equal(load_file(str(student))[weight], ema[weight])

    exported = export_model_dir(checkpoint, tiny_model_dir(), tmp_path / "distilled-model")
    with pytest.raises(BadInput, match="exists"):
        export_model_dir(checkpoint, tiny_model_dir(), tmp_path / "distilled-model")
    pipeline = WorldPlayPipeline.from_model_dir(exported, "ar-distilled", device="cpu")
    assert torch.equal(pipeline.transformer.state_dict()[weight], ema[weight])
    assert pipeline.recipe(GenerationOptions()) == (4, 1.0)
    from trajectories import resolve

    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = pipeline.generate(
        "a room", image, resolve("w-3"), tmp_path / "distilled.mp4", GenerationOptions(width=32, height=32)
    )
    assert result.num_frames == 13 and (tmp_path / "distilled.mp4").stat().st_size > 0
    # the teacher's own directory is untouched
    assert not (tiny_model_dir() / "ar_distilled_action_model" / "diffusion_pytorch_model.safetensors").samefile(
        exported / "ar_distilled_action_model" / "diffusion_pytorch_model.safetensors"
    )
