"""Streaming long tuning: the stage schedule forms, the windows and chunk masks of a 39-latent sequence, the
anchor re-encode, and a streaming run on the tiny model that resumes mid-sequence exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train_fixtures import tiny_model_dir, train_config_data
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import validate_config

ZELDA = {
    "name": "streaming_long_tuning",
    "chunk_latents": 3,
    "window_latents": 39,
    "streaming_chunk_size": 9,
    "streaming_fixed_overlap_latents": 3,
    "critic": {"learning_rate": 1e-4},
}


def _method(**changes):
    return validate_config(train_config_data(Path("unused-run"), method={**ZELDA, **changes})).method


def test_stage_schedules_parse_in_both_forms_and_bad_ones_are_one_line_errors():
    from worker.training.streaming import select_stage

    compact = _method(window_latents=240, multi_phased_distill_schedule="700:21,3000:240").stages
    assert [(s.start_step, s.end_step, s.num_latent_t, s.streaming) for s in compact] == [
        (0, 700, 21, False),
        (700, 3000, 240, True),
    ]
    explicit = _method(multi_phased_distill_schedule="0:100:9,100:400:39").stages
    assert [(s.start_step, s.end_step, s.length, s.streaming) for s in explicit] == [
        (0, 100, 9, False),
        (100, 400, 39, True),
    ]
    listed = _method(
        multi_phased_distill_schedule=[
            {"stage": "warmup", "start_step": 0, "end_step": 10, "num_latent_t": 9},
            {"stage": "long", "start_step": 10, "end_step": 30, "num_latent_t": 39},
            {
                "stage": "custom",
                "start_step": 40,
                "end_step": 50,
                "num_latent_t": 18,
                "streaming_training": True,
                "streaming_chunk_size": 6,
            },
        ]
    )
    assert [stage.streaming for stage in listed.stages] == [False, True, True]
    assert listed.window_settings(listed.stages[2]) == (6, 3, None)
    # the active stage: the last one started; before any, the first; after all, the last
    assert [select_stage(listed.stages, step) for step in (0, 9, 10, 35, 40, 999)] == [0, 0, 1, 1, 2, 2]
    # omitted: one streaming stage of streaming_max_length (else window_latents)
    assert [(s.length, s.streaming) for s in _method(streaming_max_length=27).stages] == [(27, True)]
    assert [(s.length, s.streaming) for s in _method().stages] == [(39, True)]

    cases = [
        ({"multi_phased_distill_schedule": "700:21,3000:240"}, "needs 240 latents but window_latents is 39"),
        ({"multi_phased_distill_schedule": "100:9,50:39"}, "ends at or before its start"),
        ({"multi_phased_distill_schedule": "0:100:9,50:200:39"}, "starts before stage"),
        ({"multi_phased_distill_schedule": "100:x"}, "is not END:LATENTS"),
        ({"multi_phased_distill_schedule": "100:10"}, "not whole chunks"),
        ({"streaming_fixed_overlap_latents": 4}, "whole chunks of new latents"),
        ({"streaming_fixed_overlap_latents": None}, "streaming_min_new_frame"),
        ({"streaming_require_full_blocks": False}, "Input should be True"),
        ({"streaming_anchor_inject_k": 4}, "at most the overlap"),
        ({"real_score_cfg": False}, "Extra inputs"),
    ]
    for change, message in cases:
        with pytest.raises(BadInput, match=message):
            _method(**change)


def test_windows_and_chunk_masks_of_a_39_latent_sequence():
    from worker.training.streaming import plan_window

    generator = torch.Generator().manual_seed(0)
    length, plans = 0, []
    while length < 39:
        plan = plan_window(length, 39, 9, 3, None, 3, generator)
        plans.append(plan)
        length += plan.new_frames
    # 9 new latents first (no overlap), then 6 new after 3 of history: six iterations per sequence
    assert [plan.new_frames for plan in plans] == [9, 6, 6, 6, 6, 6]
    assert [plan.overlap for plan in plans] == [0, 3, 3, 3, 3, 3]
    assert [plan.window_start for plan in plans] == [0, 6, 12, 18, 24, 30]
    assert plans[0].mask == [True] * 9
    assert all(plan.mask == [False] * 3 + [True] * 6 for plan in plans[1:])
    assert plans[-1].window_start + plans[-1].window == 39
    with pytest.raises(ValueError, match="complete"):
        plan_window(39, 39, 9, 3, None, 3, generator)
    # a remainder is what is left; without a fixed overlap the new count is drawn from range(min_new, window, chunk)
    assert plan_window(36, 39, 9, 3, None, 3, generator).new_frames == 3
    drawn = {plan_window(9, 39, 9, None, 3, 3, generator).new_frames for _ in range(200)}
    assert drawn == {3, 6}
    assert {plan_window(9, 39, 21, None, 18, 3, generator).new_frames for _ in range(20)} == {18}


def test_the_score_window_starts_with_the_reencoded_anchor():
    from worker.models.vae import load_vae
    from worker.training.batches import Batch
    from worker.training.streaming import StreamingLongTuning, StreamState, WindowPlan

    method = _method()
    vae = load_vae(tiny_model_dir() / "vae")
    scaling = vae.config.scaling_factor
    streaming = StreamingLongTuning(method, None, 0, vae)
    generator = torch.Generator().manual_seed(0)
    history = torch.randn(1, 4, 15, 2, 2, generator=generator)
    new = torch.randn(1, 4, 6, 2, 2, generator=generator).requires_grad_(True)
    batch = Batch(
        latents=torch.zeros(1, 4, 39, 2, 2),
        noise=torch.zeros(1, 4, 39, 2, 2),
        sigmas=torch.ones(1, 39),
        loss_mask=torch.ones(1, 39),
        image_cond=torch.full((1, 4, 1, 2, 2), 7.0),
        viewmats=torch.arange(39.0)[None, :, None, None].expand(1, 39, 4, 4),
        intrinsics=torch.zeros(1, 39, 3, 3),
        actions=torch.arange(39)[None],
        prompt=None,
        memory=torch.zeros(1, dtype=torch.bool),
    )
    state = StreamState(stage=0, reset_step=0, length=15, generated=history, batch=batch)
    plan = WindowPlan(new_start=15, new_frames=6, window=9)
    window, window_batch = streaming.score_window(state, new, plan)
    assert window.shape[2] == 9 and plan.window_start == 12
    # [anchor | history latents 13, 14 | the 6 new latents], cameras and actions of latents 12..20
    torch.testing.assert_close(window[:, :, 1:3], history[:, :, 13:15])
    assert window[:, :, 3:].grad_fn is not None and torch.equal(window[:, :, 3:].detach(), new.detach())
    assert window_batch.actions[0].tolist() == list(range(12, 21))
    # the anchor: the last frame decoded from the previous window's latents up to latent 12, encoded again
    decoded = vae.decode(history[:, :, 6:13] / scaling)
    anchor = vae.encode(decoded[:, :, -1:]) * scaling
    torch.testing.assert_close(window[:, :, :1], anchor)
    torch.testing.assert_close(window_batch.image_cond, anchor)
    # gradients reach only the new latents
    window.sum().backward()
    assert torch.equal(new.grad, torch.ones_like(new))
    # without the re-encode: the latest 9 latents and the clip's own condition
    plain = StreamingLongTuning(method.model_copy(update={"streaming_reencode_overlap_anchor": False}), None, 0, vae)
    window, window_batch = plain.score_window(state, new.detach(), plan)
    torch.testing.assert_close(window[:, :, :3], history[:, :, 12:15])
    assert torch.equal(window_batch.image_cond, batch.image_cond)


def _run(tmp_path, name, resume_from=None):
    from worker.training.trainer import Hooks, Trainer
    from worldplay_cli.contract.training import TrainConfig

    method = {
        "name": "streaming_long_tuning",
        "chunk_latents": 4,
        "window_latents": 16,
        "streaming_chunk_size": 8,
        "streaming_fixed_overlap_latents": 4,
        "generator_update_interval": 2,
        "real_score_guidance_scale": 2.0,
        "memory_points": 2000,
        "teacher": {"init": "ar", "attention": "chunk_causal"},
        "critic": {"learning_rate": 1e-3},
    }
    data = train_config_data(tmp_path / name, method=method, max_steps=5)
    data["checkpoint"] = {"output_dir": str(tmp_path / name), "every_steps": 2, "keep_last": None}
    records = []
    trainer = Trainer(TrainConfig.model_validate(data), resume_from=resume_from, hooks=Hooks(records.append))
    trainer.run()
    return trainer, {record["step"]: record for record in records if record["kind"] == "train"}


@pytest.mark.slow
def test_streaming_run_keeps_its_sequence_across_iterations_and_resumes_it_exactly(tmp_path):
    full, records = _run(tmp_path, "full")
    # 16 latents in windows of 8 with 4 of overlap: 8, 4, 4 new latents (steps 0-2), then a new sequence
    state = full.method.states[0]
    assert state.length == 12 and state.reset_step == 3
    resumed, resumed_records = _run(tmp_path, "resumed", resume_from=tmp_path / "full" / "checkpoint-2")
    assert resumed.method.states[0].reset_step == 3
    for step in (3, 4, 5):
        for key in ("critic_loss", "generator_loss", "critic_grad_norm"):
            assert resumed_records[step][key] == pytest.approx(records[step][key], rel=1e-5), (step, key)
    for left, right in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(left, right, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(full.method.states[0].generated, resumed.method.states[0].generated)
