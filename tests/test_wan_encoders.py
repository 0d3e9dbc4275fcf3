"""The WAN conditioning against the official WAN pipeline (golden set C): UMT5 prompt states with their
tokenisation and zeroed padding rows, the image framing, and the image-to-video latent."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from golden_util import GOLDEN_DIR, WAN_VAE, load_io, regenerate_state_dict
from worker.models.wan.vae import TINY_WAN_VAE_CONFIG, WanVAE
from worker.pipeline.wan_encoders import (
    MAX_SEQUENCE_LENGTH,
    WanTextEncoder,
    clean_prompt,
    image_condition,
    wan_image_frame,
    write_tiny_wan_text_encoder,
)

FACTS = json.loads((GOLDEN_DIR / "wan_vae_facts.json").read_text())
PROMPTS = FACTS["prompts"]


@pytest.fixture(scope="module")
def text_io():
    return load_io("wan_text_io.safetensors")


@pytest.fixture(scope="module")
def vae_io():
    return load_io("wan_vae_io.safetensors")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan-text")
    return write_tiny_wan_text_encoder(root / "text_encoder", root / "tokenizer", FACTS["text_seed"])


@pytest.fixture(scope="module")
def text_encoder(tiny_dirs):
    return WanTextEncoder.load(*tiny_dirs)


def test_tiny_writer_lays_out_the_released_folders(tiny_dirs, text_encoder):
    encoder_dir, tokenizer_dir = tiny_dirs
    assert (encoder_dir / "config.json").is_file() and (tokenizer_dir / "tokenizer_config.json").is_file()
    assert json.loads((encoder_dir / "config.json").read_text())["architectures"] == ["UMT5EncoderModel"]
    assert text_encoder.tokenizer.pad_token_id == 0 and text_encoder.tokenizer.eos_token_id == 1


def test_tokens_match_official(text_encoder, text_io):
    ids, mask = text_encoder.tokenize(PROMPTS)
    assert ids.shape == (3, MAX_SEQUENCE_LENGTH)
    assert torch.equal(ids, text_io["input_ids"])
    assert torch.equal(mask, text_io["attention_mask"])
    # the long prompt is truncated to 512 and still closes with </s>
    assert mask[2].all() and ids[2, -1] == text_encoder.tokenizer.eos_token_id


def test_prompt_states_match_official_with_zero_padding_rows(text_encoder, text_io):
    states = text_encoder.encode(PROMPTS)
    assert states.shape == (3, MAX_SEQUENCE_LENGTH, 16)
    torch.testing.assert_close(states, text_io["prompt_embeds"], atol=1e-5, rtol=1e-5)
    lengths = text_io["attention_mask"].sum(dim=1)
    for row, length in enumerate(lengths.tolist()):
        assert torch.count_nonzero(states[row, length:]) == 0
        assert torch.count_nonzero(states[row, :length].abs().sum(dim=-1)) == length


def test_prompt_cleaning():
    assert clean_prompt("  a \u201cquoted\u201d  sign &amp;amp; door\n\t ") == 'a "quoted" sign & door'
    assert clean_prompt("caf\u00c3\u00a9") == "caf\u00e9"  # mojibake fixed by ftfy


def test_image_frame_matches_official(vae_io):
    source = Image.fromarray(vae_io["image_source"].numpy())
    width, height = FACTS["image_size"]
    frame = wan_image_frame(source, width, height)
    assert frame.shape == (1, 3, 1, height, width)
    torch.testing.assert_close(frame, vae_io["image"], atol=0, rtol=0)


def test_image_condition_is_official_latent_zero(vae_io):
    vae = WanVAE(TINY_WAN_VAE_CONFIG)
    vae.load_state_dict(regenerate_state_dict(WAN_VAE), strict=True)
    width, height = FACTS["image_size"]
    source = Image.fromarray(vae_io["image_source"].numpy())
    latent = image_condition(vae.eval(), source, width, height, torch.Generator().manual_seed(FACTS["sample_seed"]))
    torch.testing.assert_close(latent, vae_io["image_latent"], atol=1e-4, rtol=1e-4)
