"""The 720p super-resolution stage: parity with the official SR code on the golden tensors
(tools/make_sr_golden.py), the bucket rule and schedule exactly, and what `--sr` can serve."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from golden_util import GOLDEN_DIR, SR_TRANSFORMER, SR_UPSAMPLER, load_io, read_param_order, regenerate_state_dict
from transformer_util import golden_prompt
from worker.models.checkpoint import CheckpointError, load_sr_transformer
from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig
from worker.models.upsampler import LatentUpsampler, UpsamplerConfig, load_upsampler
from worker.pipeline.super_resolution import SuperResolution, noisy_condition, resize_latents, sr_condition
from worldplay_cli.contract import sr, variants
from worldplay_cli.contract.buckets import super_resolution_size

ATOL = 1e-5
FACTS = json.loads((GOLDEN_DIR / "sr_sizes_schedule.json").read_text())


@pytest.fixture(scope="module")
def io():
    return load_io("tiny_sr_io.safetensors")


@pytest.fixture(scope="module")
def stage() -> SuperResolution:
    config = replace(WorldPlayTransformerConfig.from_official_dict(FACTS["transformer"]), action_parameters=False)
    transformer = WorldPlayTransformer(config)
    transformer.load_state_dict(regenerate_state_dict(SR_TRANSFORMER), strict=True)
    upsampler = LatentUpsampler(UpsamplerConfig.from_official_dict(FACTS["upsampler"]))
    upsampler.load_state_dict(regenerate_state_dict(SR_UPSAMPLER), strict=True)
    return SuperResolution(transformer.eval(), upsampler.eval())


def max_error(ours: torch.Tensor, golden: torch.Tensor) -> float:
    assert ours.shape == golden.shape
    return (ours.float() - golden).abs().max().item()


# -- sizes and schedule: exact ------------------------------------------------------------------------


def test_every_480p_bucket_maps_to_the_official_720p_bucket():
    pairs = FACTS["bucket_map_480p_to_720p"]
    assert len(pairs) == 121
    assert {tuple(low): super_resolution_size(*low) for low, _ in pairs} == {
        tuple(low): tuple(high) for low, high in pairs
    }
    assert super_resolution_size(848, 480) == (1280, 720) and super_resolution_size(832, 480) == (1248, 720)


def test_a_size_that_is_no_480p_bucket_has_no_720p_size():
    assert super_resolution_size(800, 480) is None


def test_schedule_and_meanflow_targets_are_the_official_ones(stage):
    scheduler = stage.scheduler()
    assert (sr.STEPS, sr.SHIFT, sr.STRENGTH) == (FACTS["steps"], FACTS["shift"], FACTS["strength"])
    assert torch.equal(scheduler.timesteps, torch.tensor(FACTS["timesteps"]))
    assert torch.equal(scheduler.sigmas, torch.tensor(FACTS["sigmas"]))
    targets = scheduler.timesteps.tolist()[1:] + [0.0]
    assert targets == pytest.approx(FACTS["r_timesteps"], abs=0)
    first_zeroed = next(i for i, t in enumerate(scheduler.timesteps.tolist()) if t < 1000 * sr.STRENGTH)
    assert first_zeroed == FACTS["first_step_without_lq"] == 3


# -- parity with the official code --------------------------------------------------------------------


def test_parameter_names_and_order_are_the_official_ones(stage):
    for model, order_file in ((stage.transformer, SR_TRANSFORMER[0]), (stage.upsampler, SR_UPSAMPLER[0])):
        assert [(name, tuple(p.shape)) for name, p in model.named_parameters()] == read_param_order(order_file)
    names = dict(stage.transformer.named_parameters())
    assert "time_r_in.mlp.0.weight" in names
    assert not any(name.startswith("action_in.") or "img_attn_prope_proj" in name for name in names)


def test_resize_and_upsampler_match_the_official_ones(io, stage):
    resized = resize_latents(io["lq_low"], tuple(io["lq_resized"].shape[-2:]))
    assert max_error(resized, io["lq_resized"]) <= ATOL
    with torch.no_grad():
        assert max_error(stage.upsampler(io["lq_resized"]), io["lq_upsampled"]) <= ATOL


def test_lq_noise_mix_and_condition_layout_are_exact(io):
    assert torch.equal(noisy_condition(io["lq_upsampled"], io["lq_noise"]), io["lq_noisy"])
    image_condition = torch.cat([io["image_cond"], torch.ones_like(io["image_cond"][:, :1])], dim=1)
    condition, zeroed = sr_condition(image_condition, io["lq_noisy"])
    assert torch.equal(condition, io["condition"])
    assert torch.equal(zeroed, io["condition_zeroed"])


def test_lq_condition_chains_resize_upsampler_and_noise(io, stage):
    lq = stage.lq_condition(io["lq_low"], tuple(io["lq_resized"].shape[-2:]), io["lq_noise"])
    assert max_error(lq, io["lq_noisy"]) <= ATOL


def test_sr_transformer_pass_matches_the_official_one(io, stage):
    timesteps, targets = FACTS["timesteps"], FACTS["r_timesteps"]
    prompt = golden_prompt(io)
    with torch.no_grad():
        first = stage.transformer.forward_sr(
            torch.cat([io["noise"], io["condition"]], 1), timesteps[0], prompt, targets[0]
        )
        late = stage.transformer.forward_sr(
            torch.cat([io["noise"], io["condition_zeroed"]], 1), timesteps[3], prompt, targets[3]
        )
    assert max_error(first, io["out_first"]) <= ATOL
    assert max_error(late, io["out_late"]) <= ATOL


def test_the_six_step_sr_loop_matches_the_official_one(io, stage):
    reported = []
    latents = stage.denoise(
        io["noise"],
        io["condition"],
        io["condition_zeroed"],
        golden_prompt(io),
        lambda done, total: reported.append((done, total)),
    )
    assert max_error(latents, io["sr_latents"]) <= ATOL
    assert reported == [(step, 6) for step in range(1, 7)]


# -- loading ------------------------------------------------------------------------------------------


def write_sr_dirs(root, stage: SuperResolution):
    from safetensors.torch import save_file

    transformer_dir, upsampler_dir = root / "transformer", root / "upsampler"
    transformer_dir.mkdir()
    upsampler_dir.mkdir()
    official = {**stage.transformer.config.to_official_dict(), "ideal_resolution": "720p"}
    (transformer_dir / "config.json").write_text(json.dumps(official))
    save_file(
        {k: v.contiguous() for k, v in stage.transformer.state_dict().items()},
        str(transformer_dir / "diffusion_pytorch_model.safetensors"),
    )
    (upsampler_dir / "config.json").write_text(json.dumps(stage.upsampler.config.to_official_dict()))
    save_file(stage.upsampler.state_dict(), str(upsampler_dir / "diffusion_pytorch_model.safetensors"))
    return transformer_dir, upsampler_dir


def test_sr_weights_load_strictly_from_their_official_config(tmp_path, io, stage):
    transformer_dir, upsampler_dir = write_sr_dirs(tmp_path, stage)
    loaded = SuperResolution.load(transformer_dir, upsampler_dir, "cpu", torch.float32)
    assert loaded.transformer.config == stage.transformer.config
    with torch.no_grad():
        assert torch.equal(loaded.upsampler(io["lq_resized"]), stage.upsampler(io["lq_resized"]))


def test_a_480p_action_checkpoint_is_refused_as_sr_weights(tmp_path, stage):
    from safetensors.torch import save_file

    transformer_dir, _ = write_sr_dirs(tmp_path, stage)
    state = {k: v.contiguous() for k, v in stage.transformer.state_dict().items()}
    state["action_in.mlp.0.weight"] = torch.zeros(64, 256)
    save_file(state, str(transformer_dir / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="1 unexpected: action_in.mlp.0.weight"):
        load_sr_transformer(transformer_dir, dtype=torch.float32)


def test_an_upsampler_of_another_class_or_shape_is_refused(tmp_path, stage):
    _, upsampler_dir = write_sr_dirs(tmp_path, stage)
    config = {**stage.upsampler.config.to_official_dict(), "_class_name": "SRTo1080pUpsampler"}
    (upsampler_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="SRTo1080pUpsampler"):
        load_upsampler(upsampler_dir)
    config = {**stage.upsampler.config.to_official_dict(), "num_blocks": 3}
    (upsampler_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="6 missing: blocks.2"):
        load_upsampler(upsampler_dir)


# -- what --sr serves -----------------------------------------------------------------------------------


def test_sr_serves_every_released_variant_up_to_125_frames_on_a_480p_bucket():
    # the SR stage is the HunyuanVideo-1.5 family's: every one of its variants, and no WAN one
    served = {record.name for record in variants.all_variants() if sr.unsupported(record.name, 32, 848, 480) is None}
    assert served == {"bi", "ar", "ar-rl", "ar-distilled"}
    assert all(record.super_resolution == (record.name in served) for record in variants.all_variants())


def test_sr_refusals_name_what_would_work():
    message, hint = sr.unsupported("ar-distilled", 64, 848, 480)
    assert "up to 125 frames (32 latents)" in message and "253 frames (64 latents)" in message
    assert "at most 125 frames (32 latents)" in hint
    message, hint = sr.unsupported("ar-distilled", 32, 800, 480)
    assert "800x480 is not one" in message and "848x480" in hint
    record = variants.Variant(
        name="no-sr", title="t", model_type="ar", chunk_latents=4, steps=4, guidance=1.0, action_dir="x",
        piece_title="x", super_resolution=False,
    )  # fmt: skip
    with variants.registered(record):
        message, hint = sr.unsupported("no-sr", 32, 848, 480)
    assert message == "variant no-sr cannot feed the 720p super-resolution stage"
    assert "--variant bi or ar or ar-rl or ar-distilled" in hint
