"""The native Wan2.2 VAE against the official WAN pipeline's VAE (golden set C: tiny weights, fp32, CPU)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from golden_util import GOLDEN_DIR, WAN_VAE, load_io, read_param_order, regenerate_state_dict
from worker.models.checkpoint import CheckpointError
from worker.models.wan.vae import (
    RELEASED_LATENTS_MEAN,
    RELEASED_LATENTS_STD,
    TINY_WAN_VAE_CONFIG,
    WanVAE,
    WanVAEConfig,
    load_wan_vae,
    write_tiny_wan_vae,
)

TOLERANCE = dict(atol=1e-4, rtol=1e-4)

# vae/config.json of Wan-AI/Wan2.2-TI2V-5B-Diffusers as released.
RELEASED_CONFIG = {
    "_class_name": "AutoencoderKLWan",
    "_diffusers_version": "0.35.0.dev0",
    "attn_scales": [],
    "base_dim": 160,
    "clip_output": False,
    "decoder_base_dim": 256,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "in_channels": 12,
    "is_residual": True,
    "latents_mean": list(RELEASED_LATENTS_MEAN),
    "latents_std": list(RELEASED_LATENTS_STD),
    "num_res_blocks": 2,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True],
    "z_dim": 48,
}


@pytest.fixture(scope="module")
def golden_state():
    return regenerate_state_dict(WAN_VAE)


@pytest.fixture(scope="module")
def vae(golden_state):
    model = WanVAE(TINY_WAN_VAE_CONFIG)
    model.load_state_dict(golden_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def io():
    return load_io("wan_vae_io.safetensors")


def test_tiny_config_is_the_golden_architecture():
    facts = json.loads((GOLDEN_DIR / "wan_vae_facts.json").read_text())["vae"]
    config = asdict(TINY_WAN_VAE_CONFIG)
    assert {key: list(config[key]) if isinstance(config[key], tuple) else config[key] for key in facts} == facts
    with torch.device("meta"):
        ours = [(name, tuple(parameter.shape)) for name, parameter in WanVAE(TINY_WAN_VAE_CONFIG).named_parameters()]
    # same names, shapes and registration order: the seeded tiny writer draws the golden weights
    assert ours == read_param_order(WAN_VAE[0])


def test_released_config_parses_and_builds_the_released_shapes():
    config = WanVAEConfig.from_dict(RELEASED_CONFIG)
    assert config == WanVAEConfig()
    assert WanVAEConfig.from_dict(config.to_dict()) == config
    with torch.device("meta"):
        shapes = {name: tuple(parameter.shape) for name, parameter in WanVAE(config).named_parameters()}
    assert shapes["encoder.conv_in.weight"] == (160, 12, 3, 3, 3)
    assert shapes["encoder.conv_out.weight"] == (96, 640, 3, 3, 3)
    assert shapes["quant_conv.weight"] == (96, 96, 1, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (1024, 48, 3, 3, 3)
    assert shapes["decoder.up_blocks.0.upsampler.time_conv.weight"] == (2048, 1024, 3, 1, 1)
    assert shapes["encoder.down_blocks.1.downsampler.time_conv.weight"] == (320, 320, 3, 1, 1)
    assert shapes["decoder.mid_block.attentions.0.norm.gamma"] == (1024, 1, 1)
    assert shapes["decoder.conv_out.weight"] == (12, 256, 3, 3, 3)


def test_config_refuses_the_wan21_vae_and_unknown_keys():
    with pytest.raises(ValueError, match="is_residual"):
        WanVAEConfig.from_dict({**RELEASED_CONFIG, "is_residual": False})
    with pytest.raises(ValueError, match="unknown Wan VAE config keys: shift_factor"):
        WanVAEConfig.from_dict({**RELEASED_CONFIG, "shift_factor": 0.1})


def test_encode_image_matches_official(vae, io):
    mean, logvar = vae.encode(io["image"])
    assert mean.shape == (1, 48, 1, 2, 3)
    torch.testing.assert_close(mean, io["image_mean"], **TOLERANCE)
    torch.testing.assert_close(logvar, io["image_logvar"], **TOLERANCE)


def test_image_latent_is_the_normalised_posterior_sample(vae, io):
    latent = vae.encode_image(io["image"], torch.Generator().manual_seed(23))
    assert latent.shape == (1, 48, 1, 2, 3) and latent.dtype == torch.float32
    torch.testing.assert_close(latent, io["image_latent"], **TOLERANCE)
    # a sample, not the mean: another seed gives another latent, and the mean is neither
    other = vae.encode_image(io["image"], torch.Generator().manual_seed(24))
    assert (other - latent).abs().max() > 1e-2
    assert (vae.normalize(io["image_mean"]) - latent).abs().max() > 1e-2


def test_encode_video_matches_official(vae, io):
    mean, logvar = vae.encode(io["video"])
    assert mean.shape == (1, 48, 3, 2, 3)
    torch.testing.assert_close(mean, io["video_mean"], **TOLERANCE)
    torch.testing.assert_close(logvar, io["video_logvar"], **TOLERANCE)


def test_decode_matches_official(vae, io):
    video = vae.decode_latents(io["latents"])
    assert video.shape == (1, 3, 9, 32, 48)
    torch.testing.assert_close(video, io["decoded"], **TOLERANCE)


def test_stream_decoder_matches_official_decode_next_latent_and_full_decode(vae, io):
    decoder = vae.stream_decoder()
    pieces = [decoder.decode_next(io["latents"][:, :, index : index + 1]) for index in range(3)]
    assert [piece.shape[2] for piece in pieces] == [1, 4, 4]
    streamed = torch.cat(pieces, dim=2)
    torch.testing.assert_close(streamed, io["decoded_per_latent"], **TOLERANCE)
    torch.testing.assert_close(streamed, vae.decode_latents(io["latents"]), atol=1e-6, rtol=0)


def test_normalisation_uses_the_config_statistics_and_round_trips(vae, io):
    torch.testing.assert_close(torch.tensor(vae.config.latents_mean), io["latents_mean"])
    torch.testing.assert_close(torch.tensor(vae.config.latents_std), io["latents_std"])
    raw = io["video_mean"]
    normalised = vae.normalize(raw)
    expected = (raw - io["latents_mean"].view(1, -1, 1, 1, 1)) / io["latents_std"].view(1, -1, 1, 1, 1)
    torch.testing.assert_close(normalised, expected)
    torch.testing.assert_close(vae.denormalize(normalised), raw)


def test_encode_refuses_frame_counts_and_sizes_it_cannot_compress(vae):
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        vae.encode(torch.zeros(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode(torch.zeros(1, 3, 1, 24, 32))


def test_tiny_writer_round_trips_through_the_loader(tmp_path, golden_state, io):
    directory = write_tiny_wan_vae(tmp_path / "vae", seed=WAN_VAE[1], scale=WAN_VAE[2])
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((directory / "config.json").read_text())["_class_name"] == "AutoencoderKLWan"
    vae = load_wan_vae(directory)
    assert vae.config == TINY_WAN_VAE_CONFIG
    state = vae.state_dict()
    assert list(state) == list(golden_state)
    assert all(torch.equal(state[name], golden_state[name]) for name in golden_state)
    torch.testing.assert_close(vae.encode(io["image"])[0], io["image_mean"], **TOLERANCE)


def test_strict_load_refuses_a_wrong_checkpoint_in_one_line(tmp_path):
    directory = write_tiny_wan_vae(tmp_path / "vae")
    weights = directory / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"][:6].clone()
    del state["encoder.conv_in.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as caught:
        load_wan_vae(directory)
    message = str(caught.value)
    assert "\n" not in message
    assert "1 missing: encoder.conv_in.bias" in message
    assert "1 unexpected: encoder.extra.weight" in message
    assert "decoder.conv_out.weight (model [12, 8, 3, 3, 3], file [6, 8, 3, 3, 3])" in message
    assert "Wan2.2-TI2V-5B-Diffusers" in caught.value.hint


def test_load_refuses_a_missing_file_or_a_foreign_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_wan_vae(tmp_path)
    directory = write_tiny_wan_vae(tmp_path / "vae")
    (directory / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLConv3D", "latent_channels": 32}))
    with pytest.raises(CheckpointError, match="unknown Wan VAE config keys: latent_channels"):
        load_wan_vae(directory)


def test_tiny_writer_takes_the_latent_width_of_a_tiny_transformer(tmp_path):
    vae = load_wan_vae(write_tiny_wan_vae(tmp_path / "vae", latent_channels=8))
    assert vae.config.z_dim == 8 and vae.config.latents_std == RELEASED_LATENTS_STD[:8]
    latent = vae.encode_image(torch.zeros(1, 3, 1, 32, 32), torch.Generator().manual_seed(0))
    assert latent.shape == (1, 8, 1, 2, 2)
    assert vae.decode_latents(torch.cat([latent, latent], dim=2)).shape == (1, 3, 5, 32, 32)
