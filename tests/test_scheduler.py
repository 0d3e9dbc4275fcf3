"""Flow-matching schedule (shift 5) against the official values, Euler steps and CFG."""

from __future__ import annotations

import json

import pytest
import torch

from golden_util import load_io
from worker.models.scheduler import FlowMatchScheduler, classifier_free_guidance


@pytest.fixture(scope="module")
def golden():
    return load_io("pose_sched_memory.safetensors")


@pytest.mark.parametrize("steps", [4, 50])
def test_schedule_matches_official(golden, steps):
    scheduler = FlowMatchScheduler(steps)
    assert torch.equal(scheduler.timesteps, golden[f"sched{steps}.timesteps"])
    assert torch.equal(scheduler.sigmas, golden[f"sched{steps}.sigmas"])
    assert len(scheduler) == steps


def test_distilled_schedule_is_the_documented_one():
    scheduler = FlowMatchScheduler(4)
    torch.testing.assert_close(scheduler.timesteps, torch.tensor([1000.0, 937.5, 833.3333, 625.0]))
    torch.testing.assert_close(scheduler.sigmas, torch.tensor([1.0, 0.9375, 0.833333, 0.625, 0.0]))


def test_euler_steps_integrate_a_constant_velocity_from_noise_to_data():
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(1, 4, 2, 3, 5, generator=generator)
    noise = torch.randn(1, 4, 2, 3, 5, generator=generator)
    scheduler = FlowMatchScheduler(50)
    sample = noise.to(torch.bfloat16)
    for index in range(len(scheduler)):
        sample = scheduler.step(noise - data, index, sample)
        assert sample.dtype == torch.float32
        expected = scheduler.sigmas[index + 1] * noise + (1 - scheduler.sigmas[index + 1]) * data
        torch.testing.assert_close(sample, expected, atol=2e-2, rtol=0)
    torch.testing.assert_close(sample, data, atol=2e-2, rtol=0)
    with pytest.raises(IndexError):
        scheduler.step(noise, 50, sample)


def test_shipped_scheduler_config_shift_is_overridden(tmp_path):
    (tmp_path / "scheduler").mkdir()
    config = {
        "_class_name": "FlowMatchDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 7.0,
        "reverse": True,
        "solver": "euler",
    }
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    scheduler = FlowMatchScheduler.from_model_dir(tmp_path, 4)
    assert scheduler.shift == 5.0
    assert torch.equal(scheduler.timesteps, FlowMatchScheduler(4).timesteps)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "solver": "heun"}))
    with pytest.raises(ValueError, match="Euler"):
        FlowMatchScheduler.from_model_dir(tmp_path, 4)


def test_classifier_free_guidance():
    uncond, cond = torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0])
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 6.0), torch.tensor([7.0, 10.0]))
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 1.0), cond)
