"""Context forcing: the teacher and the critic score the student's last chunks conditioned on the memory the
student used (the union of its contexts minus the scored chunks), clean at t=14, reframed to positions 0..n-1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_fixtures import prepared_dataset, tiny_model_dir, train_config_data
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import validate_config

METHOD = {
    "name": "context_forcing",
    "chunk_latents": 4,
    "window_latents": 16,
    "score_chunks": 2,
    "memory_points": 2000,
    "critic": {"learning_rate": 1e-3},
}


def _config(output_dir, **changes):
    return validate_config(train_config_data(output_dir, method={**METHOD, **changes}))


def _batch(config):
    from worker.training.batches import SampleBuilder
    from worker.training.dataset import PreparedDataset

    dataset = PreparedDataset(prepared_dataset())
    return dataset, SampleBuilder(dataset, config.method, 0, 0.0).batch(0, 0, 1, 0, 1, 1)


def test_the_teacher_context_is_the_union_of_the_student_contexts_minus_the_scored_chunks():
    from trajectories import resolve
    from worker.pipeline.memory import sample_points_in_sphere, select_context_latents
    from worker.training.context_forcing import ContextForcing

    config = _config(prepared_dataset().parent / "unused", window_latents=32).method
    method = ContextForcing(config, None, 0)

    class Cameras:  # what teacher_context reads of a batch: 32 latents of a turning, moving camera
        c2w = resolve("w-8, right-8, a-8, left-7").c2w[:32]
        viewmats = torch.from_numpy(np.linalg.inv(c2w)).float()[None]
        latents = torch.zeros(1, 4, 32, 2, 2)

    context = method.teacher_context(Cameras, 24)
    points = sample_points_in_sphere(2000)
    w2c = Cameras.viewmats[0].double()
    expected = set(select_context_latents(w2c, 24, 4, points)) | set(select_context_latents(w2c, 28, 4, points))
    assert context == sorted(expected - set(range(24, 32)))
    # past 20 latents the memory is retrieved: not every earlier latent, and the first chunk always
    assert len(context) < 24 and context[:4] == [0, 1, 2, 3]
    with pytest.raises(BadInput, match="at least one chunk"):
        _config(prepared_dataset().parent / "unused", score_chunks=4)


def test_scores_see_the_memory_clean_at_the_context_timestep_and_only_the_scored_chunks_get_gradients():
    from worker.models.checkpoint import load_transformer
    from worker.training.context_forcing import ContextForcing
    from worker.training.self_forcing import Draws, Networks

    config = _config(prepared_dataset().parent / "unused", teacher={"init": "bi"}).method
    dataset, batch = _batch(validate_config(train_config_data(prepared_dataset().parent / "u", method=METHOD)))
    student = load_transformer(tiny_model_dir(), tiny_model_dir() / "ar_model", dtype=torch.float32)
    student.requires_grad_(True)
    # one bidirectional network as teacher and critic (trainable, as a critic is)
    teacher = load_transformer(tiny_model_dir(), tiny_model_dir() / "bidirectional_model", dtype=torch.float32)
    teacher.requires_grad_(True)
    seen, grads = [], []
    original_bi, original_chunk = teacher.forward_bi, student.forward_chunk

    def spy_bi(hidden, timestep, prompt, viewmats, intrinsics, actions, text_timestep=None):
        seen.append((hidden.shape[2], timestep.clone(), viewmats.clone()))
        return original_bi(hidden, timestep, prompt, viewmats, intrinsics, actions, text_timestep)

    def spy_chunk(*args, **kwargs):
        grads.append(torch.is_grad_enabled())
        return original_chunk(*args, **kwargs)

    teacher.forward_bi, student.forward_chunk = spy_bi, spy_chunk
    method = ContextForcing(config, dataset.negative_prompt(), 0)
    method.config = config.model_copy(update={"last_step_only": True})
    draws = Draws(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    losses = method.window_losses(Networks(student, teacher, teacher), batch, draws, True)
    # history chunks 0, 1 without gradients; the scored chunks 2, 3 with them at their exit step
    assert grads == [False] * 8 + [False, False, False, True] * 2
    assert losses.generator.requires_grad and losses.critic.requires_grad
    # teacher (real score) and critic (fake score) each see [context 0..7 | scored 8..15]
    for frames, timestep, viewmats in seen:
        assert frames == 16
        assert torch.all(timestep[:, :8] == 14.0) and torch.all(timestep[:, 8:] == timestep[:, 8:9])
        torch.testing.assert_close(viewmats, batch.viewmats)


@pytest.mark.slow
def test_context_forcing_trains_in_the_loop(tmp_path):
    from worker.training.trainer import Hooks, Trainer
    from worldplay_cli.contract.training import TrainConfig

    data = train_config_data(tmp_path, method={**METHOD, "real_score_guidance_scale": 3.0}, max_steps=2)
    records = []
    Trainer(TrainConfig.model_validate(data), hooks=Hooks(records.append)).run()
    train = [record for record in records if record["kind"] == "train"]
    assert [record["step"] for record in train] == [1, 2]
    assert all(np.isfinite(record["critic_loss"]) and np.isfinite(record["generator_loss"]) for record in train)
