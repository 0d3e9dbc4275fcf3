"""Self-Forcing DMD2 on the tiny model: the DMD gradient and the critic loss by hand, the student and score
timesteps, the rollout equal to the inference rollout, one rollout per iteration, exact resume mid-run."""

from __future__ import annotations

import pytest
import torch

from train_fixtures import prepared_dataset, tiny_model_dir, train_config_data
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import TrainConfig, validate_config

SELF_FORCING = {
    "name": "self_forcing",
    "chunk_latents": 4,
    "window_latents": 8,
    "memory_points": 2000,
    "teacher": {"init": "ar", "attention": "chunk_causal"},
    "critic": {"learning_rate": 1e-3},
}


def _config(output_dir, **method) -> dict:
    return train_config_data(output_dir, method={**SELF_FORCING, **method})


def test_dmd_generator_gradient_is_the_normalised_score_difference():
    from worker.training.dmd import dmd_generator_loss

    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 2, 2, generator=generator, dtype=torch.float64).requires_grad_(True)
    fake = torch.randn(2, 3, 4, 2, 2, generator=generator, dtype=torch.float64)
    real = torch.randn(2, 3, 4, 2, 2, generator=generator, dtype=torch.float64)
    dmd_generator_loss(x0, fake, real).backward()
    # by hand: g = (fake - real) / mean|x0 - real| per sample; dL/dx0 = g / N
    expected = torch.empty_like(fake)
    for row in range(2):
        expected[row] = (fake[row] - real[row]) / (x0[row] - real[row]).abs().mean()
    torch.testing.assert_close(x0.grad, expected.detach() / x0.numel())

    # masked (streaming windows): only the selected latents, normalised over them, divided by their count
    x0.grad = None
    mask = torch.tensor([[0.0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float64)
    dmd_generator_loss(x0, fake, real, mask).backward()
    weights = mask[:, None, :, None, None].expand_as(x0)
    expected = torch.empty_like(fake)
    for row in range(2):
        selected = weights[row].bool()
        normaliser = (x0[row] - real[row]).abs()[selected].mean()
        expected[row] = (fake[row] - real[row]) / normaliser * weights[row]
    torch.testing.assert_close(x0.grad, expected.detach() / weights.sum())
    # equal scores give no gradient, and a zero distance to the teacher neither (no NaN)
    x0.grad = None
    dmd_generator_loss(x0, real, real).backward()
    assert torch.count_nonzero(x0.grad) == 0
    same = real.clone().requires_grad_(True)
    dmd_generator_loss(same, fake, real).backward()
    assert torch.isfinite(same.grad).all()


def test_critic_loss_is_flow_matching_on_the_detached_sample():
    from worker.training.dmd import critic_flow_loss, noised

    generator = torch.Generator().manual_seed(1)
    x0, noise, velocity = (torch.randn(2, 3, 4, 2, 2, generator=generator) for _ in range(3))
    timesteps = torch.tensor([250.0, 900.0])
    noisy = noised(x0, noise, timesteps)
    torch.testing.assert_close(noisy[1], 0.1 * x0[1] + 0.9 * noise[1])
    assert critic_flow_loss(velocity, noise, x0).item() == pytest.approx(((velocity - (noise - x0)) ** 2).mean().item())
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]])
    expected = ((velocity - (noise - x0)) ** 2)[0, :, :2].mean()
    assert critic_flow_loss(velocity, noise, x0, mask).item() == pytest.approx(expected.item())


def test_student_and_score_timesteps_follow_the_fact_sheet():
    from worker.training.dmd import sample_score_timesteps, shift_timesteps, student_timesteps

    # warped through shift 5: the 4-step schedule ar-distilled runs at inference
    warped = student_timesteps([1000, 750, 500, 250], warp=True, shift=5.0)
    assert warped == pytest.approx([1000.0, 937.5, 833.333333, 625.0])
    assert student_timesteps([1000, 500], warp=False, shift=5.0) == [1000.0, 500.0]
    from worker.models.scheduler import FlowMatchScheduler

    assert warped == pytest.approx(FlowMatchScheduler(4, 5.0).timesteps.tolist(), rel=1e-6)

    # score timesteps: U{0..999} shifted, then clamped; the same generator state draws the same values
    draws = sample_score_timesteps(torch.Generator().manual_seed(0), 20000, 5.0, 0.0, 1.0)
    raw = torch.randint(0, 1000, (20000,), generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(draws, shift_timesteps(raw, 5.0).float())
    assert draws.min() >= 0 and draws.max() < 1000
    # shift 5 puts half of the mass above t = 833 (τ = 0.5)
    assert (draws > 833.3).float().mean().item() == pytest.approx(0.5, abs=0.02)
    clamped = sample_score_timesteps(torch.Generator().manual_seed(0), 20000, 5.0, 0.02, 0.98)
    assert clamped.min().item() == pytest.approx(20.0) and clamped.max().item() == pytest.approx(980.0)
    torch.testing.assert_close(clamped, draws.clamp(20.0, 980.0))


def test_config_rejects_unknown_and_inconsistent_keys(tmp_path):
    config = validate_config(_config(tmp_path))
    assert config.method.critic_init == "ar" and config.method.critic_attention == "chunk_causal"
    cases = [
        ({"enable_gradient_in_rollout": True}, "Extra inputs"),
        ({"window_latents": 10}, "multiple of chunk_latents"),
        ({"rollout_mode": "data_latent"}, "simulate"),
        ({"denoising_steps": [250, 500]}, "must decrease"),
        ({"min_timestep_ratio": 0.9, "max_timestep_ratio": 0.1}, "must not exceed"),
        ({"critic": {}}, "learning_rate"),
    ]
    for change, message in cases:
        with pytest.raises(BadInput, match=message):
            validate_config(_config(tmp_path, **change))


def _student_and_batch():
    from worker.models.checkpoint import load_transformer
    from worker.training.batches import SampleBuilder
    from worker.training.dataset import PreparedDataset

    config = validate_config(_config(prepared_dataset().parent / "unused"))
    dataset = PreparedDataset(prepared_dataset())
    batch = SampleBuilder(dataset, config.method, 0, 0.0).batch(0, 0, 1, 0, 1, 1)
    student = load_transformer(tiny_model_dir(), tiny_model_dir() / "ar_model", dtype=torch.float32)
    return config, dataset, student, batch


def test_the_rollout_is_the_inference_rollout_and_runs_once_per_iteration():
    from worker.models.scheduler import FlowMatchScheduler
    from worker.pipeline.memory import sample_points_in_sphere
    from worker.pipeline.rollout import RolloutInputs, ar_rollout
    from worker.training.self_forcing import Draws, Networks, SelfForcing, full_condition

    config, dataset, student, batch = _student_and_batch()
    method_config = config.method.model_copy(update={"student_sample_type": "ode", "last_step_only": True})
    method = SelfForcing(method_config, dataset.negative_prompt(), seed=0)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(7)
        rolled = method.rollout(student, batch, Draws(generator, generator), with_grad=False)
    # ode sampling with every chunk to its last step is the Euler sampler of `ar-distilled` (4 steps, shift 5)
    generator = torch.Generator().manual_seed(7)
    noise = torch.cat([torch.randn(1, 4, 4, 2, 2, generator=generator) for _ in range(2)], dim=2)
    inputs = RolloutInputs(
        noise=noise,
        cond=full_condition(batch),
        viewmats=batch.viewmats,
        intrinsics=batch.intrinsics,
        actions=batch.actions,
        w2c=batch.viewmats[0].double(),
        prompts=[batch.prompt],
        points=sample_points_in_sphere(2000),
    )
    with torch.no_grad():
        chunks = list(ar_rollout(student, FlowMatchScheduler(4, 5.0), inputs, 1.0, 4, round_latents=False))
    torch.testing.assert_close(rolled, torch.cat([chunk.latents for chunk in chunks], dim=2), atol=1e-5, rtol=1e-5)

    # one student rollout per iteration when the student updates: 2 chunks x 4 steps, no second rollout
    calls = []
    original = student.forward_chunk

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    student.requires_grad_(True)
    student.forward_chunk = counting
    networks = Networks(student, student, student)
    draws = Draws(torch.Generator().manual_seed(3), torch.Generator().manual_seed(4))
    losses = method.losses(networks, lambda step: batch, 0, 0, draws, update_student=True)
    assert calls == [False, False, False, True] * 2
    assert losses.generator is not None and losses.generator.requires_grad
    assert not losses.rollout.requires_grad and losses.critic.requires_grad


def _train(tmp_path, name, resume_from=None, **overrides):
    from worker.training.trainer import Hooks, Trainer

    data = _config(tmp_path / name, generator_update_interval=2, real_score_guidance_scale=2.0)
    data.update(max_steps=4, checkpoint={"output_dir": str(tmp_path / name), "every_steps": 2}, **overrides)
    records = []
    trainer = Trainer(TrainConfig.model_validate(data), resume_from=resume_from, hooks=Hooks(records.append))
    trainer.run()
    return trainer, {record["step"]: record for record in records if record["kind"] == "train"}


@pytest.mark.slow
def test_two_time_scale_updates_and_exact_resume_mid_run(tmp_path):
    ema = {"decay": 0.9, "start_step": 1}
    full, records = _train(tmp_path, "full", ema=ema)
    # the critic steps every iteration, the student on iterations 0 and 2 (records count steps from 1)
    assert [records[step]["update_student"] for step in (1, 2, 3, 4)] == [True, False, True, False]
    assert records[2]["grad_norm"] is None and records[1]["grad_norm"] > 0
    assert all(records[step]["critic_grad_norm"] > 0 for step in records)
    resumed, resumed_records = _train(tmp_path, "resumed", resume_from=tmp_path / "full" / "checkpoint-2", ema=ema)
    assert sorted(resumed_records) == [3, 4]
    for step in (3, 4):
        for key in ("critic_loss", "generator_loss", "grad_norm", "critic_grad_norm"):
            assert resumed_records[step][key] == pytest.approx(records[step][key], rel=1e-5), (step, key)
    for a, b in [(full.model, resumed.model), (full.critic, resumed.critic)]:
        for (name, left), right in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(left, right, atol=1e-6, rtol=1e-5, msg=name)
    # the teacher stays frozen
    from worker.models.checkpoint import load_transformer

    teacher = load_transformer(tiny_model_dir(), tiny_model_dir() / "ar_model", dtype=torch.float32)
    for left, right in zip(teacher.state_dict().values(), full.teacher.state_dict().values()):
        assert torch.equal(left, right)


@pytest.mark.slow
def test_both_lr_schedules_advance_every_iteration_whatever_the_student_did(tmp_path):
    """The student's schedule is a function of the iteration, like the critic's: it advances on critic-only
    iterations and on a student update skipped for its gradient norm too (upstream FastVideo steps the
    student's only when it updates, so with interval 5 a schedule over max_steps ran a fifth of its course);
    a resume at a critic-only iteration continues both exactly, without PyTorch's step-order warning."""
    import math
    import warnings

    from worker.training.trainer import Hooks, Trainer, schedule_factor

    def run(name, max_steps, resume_from=None, **optimizer):
        # guided, so the student's first DMD gradient is not zero (its critic starts as its teacher)
        data = _config(tmp_path / name, window_latents=4, generator_update_interval=3, real_score_guidance_scale=2.0)
        data["method"]["critic"] = {"learning_rate": 1e-3, "schedule": "linear"}
        data.update(
            max_steps=max_steps,
            optimizer={"learning_rate": 1e-3, "schedule": "cosine", "warmup_steps": 2, **optimizer},
            checkpoint={"output_dir": str(tmp_path / name), "every_steps": 2, "keep_last": 3},
        )
        records = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer(TrainConfig.model_validate(data), resume_from=resume_from, hooks=Hooks(records.append)).run()
        assert not [warning for warning in caught if "lr_scheduler" in str(warning.message)]
        return {record["step"]: record for record in records if record["kind"] == "train"}

    # a record (steps counted from 1) is logged after its iteration's schedule steps: the rate of the next one
    records = run("full", 5, skip_grad_norm_above=1e-12)  # every student update skipped
    student, critic = schedule_factor("cosine", 2, 5), schedule_factor("linear", 0, 5)
    assert [records[step]["update_student"] for step in range(1, 6)] == [True, False, False, True, False]
    assert all(records[step]["skipped"] for step in range(1, 6))
    for step in range(1, 6):
        assert math.isclose(records[step]["lr"], 1e-3 * student(step)), step
        assert math.isclose(records[step]["critic_lr"], 1e-3 * critic(step)), step
    resumed = run("resumed", 5, resume_from=tmp_path / "full" / "checkpoint-2", skip_grad_norm_above=1e-12)
    assert [(resumed[step]["lr"], resumed[step]["critic_lr"]) for step in (3, 4, 5)] == [
        (records[step]["lr"], records[step]["critic_lr"]) for step in (3, 4, 5)
    ]
