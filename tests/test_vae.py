"""The native VAE against the official module's golden outputs (tiny weights, fp32, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from golden_util import load_io
from worker.models.tiny_vae import TINY_VAE_CONFIG, write_tiny_vae
from worker.models.vae import HunyuanVideo15VAE, VAEConfig, load_vae

SCALING = 1.03682

# vae/config.json of tencent/HunyuanVideo-1.5 as released.
RELEASED_CONFIG = {
    "_class_name": "AutoencoderKLConv3D",
    "_diffusers_version": "0.35.0",
    "block_out_channels": [128, 256, 512, 1024, 1024],
    "downsample_match_channel": True,
    "ffactor_spatial": 16,
    "ffactor_temporal": 4,
    "in_channels": 3,
    "latent_channels": 32,
    "layers_per_block": 2,
    "out_channels": 3,
    "sample_size": 256,
    "sample_tsize": 64,
    "scaling_factor": 1.03682,
    "shift_factor": None,
    "upsample_match_channel": True,
}


@pytest.fixture(scope="module")
def golden_vae(golden_vae_state):
    vae = HunyuanVideo15VAE(TINY_VAE_CONFIG)
    vae.load_state_dict(golden_vae_state, strict=True)
    return vae.eval()


@pytest.fixture(scope="module")
def io():
    return load_io("tiny_vae_io.safetensors")


def test_encode_image_matches_official(golden_vae, io):
    with torch.no_grad():
        latents = golden_vae.encode(io["img"]) * SCALING
    assert latents.shape == (1, 4, 1, 2, 3)
    torch.testing.assert_close(latents, io["img_lat"], atol=1e-4, rtol=1e-4)


def test_encode_video_matches_official(golden_vae, io):
    with torch.no_grad():
        latents = golden_vae.encode(io["vid"])
    assert latents.shape == (1, 4, 2, 2, 3)
    torch.testing.assert_close(latents, io["vid_lat"], atol=1e-4, rtol=1e-4)


def test_decode_matches_official(golden_vae, io):
    with torch.no_grad():
        video = golden_vae.decode(io["z"] / SCALING)
    assert video.shape == (1, 3, 9, 32, 48)
    torch.testing.assert_close(video, io["dec"], atol=1e-4, rtol=1e-4)


def test_encode_rejects_frame_count_not_one_plus_multiple_of_four(golden_vae):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        golden_vae.encode(torch.zeros(1, 3, 4, 32, 32))


def test_tiny_vae_dir_reproduces_golden_weights_and_loads(tmp_path, golden_vae_state, io):
    directory = write_tiny_vae(tmp_path)
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    vae = load_vae(directory)
    assert vae.config == TINY_VAE_CONFIG
    state = vae.state_dict()
    assert list(state) == list(golden_vae_state)
    assert all(torch.equal(state[key], value) for key, value in golden_vae_state.items())
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(io["z"] / SCALING), io["dec"], atol=1e-4, rtol=1e-4)


def test_released_config_gives_defaults_and_round_trips():
    config = VAEConfig.from_dict(RELEASED_CONFIG)
    assert config == VAEConfig()
    assert VAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="norm_num_groups"):
        VAEConfig.from_dict({**RELEASED_CONFIG, "norm_num_groups": 32})


def test_released_architecture_builds_on_meta_device():
    with torch.device("meta"):
        vae = HunyuanVideo15VAE()
    state = vae.state_dict()
    assert state["encoder.conv_in.conv.weight"].shape == (128, 3, 3, 3, 3)
    assert state["encoder.conv_out.conv.weight"].shape == (64, 1024, 3, 3, 3)
    assert state["decoder.conv_in.conv.weight"].shape == (1024, 32, 3, 3, 3)
    assert state["decoder.up.0.upsample.conv.conv.weight"].shape == (8192, 1024, 3, 3, 3)
    assert not any("nin_shortcut" in key for key in state)
    assert state["decoder.conv_out.conv.weight"].shape == (3, 128, 3, 3, 3)
