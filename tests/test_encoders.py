"""Condition encoders on tiny random Qwen2.5-VL / byT5 / SigLIP models written locally (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from worker.pipeline.encoders import (
    BYT5_DIR,
    BYT5_PREFIX,
    GLYPH_CHECKPOINT,
    GLYPH_DIR,
    LLM_DIR,
    SIGLIP_DIR,
    USER_MARKER,
    ConditionEncoders,
    VisionEncoder,
    bucket_resolution,
    extract_glyph_texts,
    format_glyph_prompt,
    resize_center_crop,
)
from worker.pipeline.tiny_encoders import TINY_COLORS, TINY_FONTS, write_tiny_encoders

PROMPT = 'A shop sign that reads "OPEN" above a wooden door, the camera moves forward.'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_encoders(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="module")
def encoders(model_dir):
    return ConditionEncoders.from_model_dir(model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def image():
    pixels = np.random.default_rng(0).integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_tiny_encoders_use_the_official_layout(model_dir):
    for path in [
        f"{LLM_DIR}/config.json",
        f"{LLM_DIR}/tokenizer.json",
        f"{BYT5_DIR}/config.json",
        f"{GLYPH_DIR}/assets/color_idx.json",
        f"{GLYPH_DIR}/assets/multilingual_10-lang_idx.json",
        f"{GLYPH_DIR}/{GLYPH_CHECKPOINT}",
        f"{SIGLIP_DIR}/image_encoder/config.json",
        f"{SIGLIP_DIR}/feature_extractor/preprocessor_config.json",
    ]:
        assert (model_dir / path).is_file(), path


def test_tiny_encoders_are_reproducible_from_their_seed(model_dir, tmp_path):
    again = write_tiny_encoders(tmp_path, seed=0)
    first = torch.load(model_dir / GLYPH_DIR / GLYPH_CHECKPOINT, weights_only=True)["state_dict"]
    second = torch.load(again / GLYPH_DIR / GLYPH_CHECKPOINT, weights_only=True)["state_dict"]
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert (model_dir / LLM_DIR / "tokenizer.json").read_text() == (again / LLM_DIR / "tokenizer.json").read_text()


def test_crop_starts_right_after_the_user_marker(encoders):
    prompt_encoder = encoders.prompt
    tokens = prompt_encoder.tokenize([PROMPT])
    ids = tokens["input_ids"][0].tolist()
    marker = prompt_encoder.tokenizer(USER_MARKER, add_special_tokens=False)["input_ids"]
    assert ids[prompt_encoder.crop_start - len(marker) : prompt_encoder.crop_start] == marker
    assert tokens["input_ids"].shape[1] == prompt_encoder.crop_start + 1000
    # everything after the crop is the prompt plus the kept assistant header
    valid = int(tokens["attention_mask"][0].sum())
    kept = prompt_encoder.tokenizer.decode(ids[prompt_encoder.crop_start : valid])
    assert kept == PROMPT + "<|im_end|>\n<|im_start|>assistant\n"


def test_text_states_are_the_third_to_last_hidden_states_of_the_prompt_tokens(encoders):
    prompt_encoder = encoders.prompt
    states, mask = prompt_encoder.encode([PROMPT])
    assert states.shape == (1, 1000, 16) and mask.shape == (1, 1000) and mask.dtype == torch.int64
    valid = int(mask.sum())
    assert mask[0, :valid].all() and not mask[0, valid:].any()

    # an unpadded forward of the same tokens, read independently of the encoder
    ids = prompt_encoder.tokenize([PROMPT])["input_ids"][:, : prompt_encoder.crop_start + valid]
    with torch.no_grad():
        outputs = prompt_encoder.model(input_ids=ids, output_hidden_states=True)
    assert len(outputs.hidden_states) == 4
    expected = outputs.hidden_states[1][:, prompt_encoder.crop_start :]
    torch.testing.assert_close(states[:, :valid], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(states[:, :valid], outputs.last_hidden_state[:, prompt_encoder.crop_start :])


def test_empty_negative_prompt_is_encoded_as_a_space(encoders):
    empty, empty_mask = encoders.prompt.encode([""])
    space, space_mask = encoders.prompt.encode([" "])
    assert torch.equal(empty, space) and torch.equal(empty_mask, space_mask)


def test_long_prompts_are_truncated_to_1000_tokens(encoders):
    states, mask = encoders.prompt.encode(["forest path " * 800])
    assert states.shape[1] == 1000 and int(mask.sum()) == 1000


@pytest.mark.parametrize(
    ("prompt", "texts"),
    [
        ("no quoted text here", []),
        ('a sign "OPEN"', ["OPEN"]),
        ("curly “Café” quotes", ["Café"]),
        ('"A" then “B” then "A" again', ["A", "B"]),
        ('"same"', ["same"]),
    ],
)
def test_glyph_texts_are_the_quoted_substrings(prompt, texts):
    assert extract_glyph_texts(prompt) == texts


def test_glyph_prompt_format():
    assert format_glyph_prompt(["OPEN", "Café"]) == 'Text "OPEN". Text "Café". '


def test_glyph_states_are_zero_without_quoted_text(encoders):
    states, mask = encoders.glyph.encode("a forest path, no text")
    assert states.shape == (1, 256, 1472) and mask.shape == (1, 256)
    assert not states.any() and not mask.any()


def test_glyph_states_encode_the_formatted_quoted_text(encoders):
    glyph = encoders.glyph
    states, mask = glyph.encode(PROMPT)
    # byte tokens of 'Text "OPEN". ' plus the end-of-sequence token
    assert int(mask.sum()) == len(b'Text "OPEN". ') + 1
    ids = glyph.tokenizer('Text "OPEN". ', return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = glyph.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(states[:, : ids.shape[1]], expected, atol=1e-5, rtol=1e-5)


def test_glyph_encoder_has_color_and_font_tokens_and_the_glyph_weights(encoders, model_dir):
    glyph = encoders.glyph
    added = ["<color-0>", "<color-2>", "<en-font-1>", "<zh-font-0>"]
    ids = glyph.tokenizer.convert_tokens_to_ids(added)
    assert all(index >= 384 for index in ids)
    assert len(glyph.tokenizer) == 384 + len(TINY_COLORS) + len(TINY_FONTS)
    assert glyph.tokenizer("<color-2>", add_special_tokens=False)["input_ids"] == [ids[1]]
    checkpoint = torch.load(model_dir / GLYPH_DIR / GLYPH_CHECKPOINT, weights_only=True)["state_dict"]
    embedding = checkpoint[BYT5_PREFIX + "embed_tokens.weight"]
    assert embedding.shape[0] == len(glyph.tokenizer)
    assert torch.equal(glyph.model.get_input_embeddings().weight, embedding)


@pytest.mark.parametrize(
    ("width", "height", "bucket"),
    [
        (1920, 1080, (480, 848)),
        (1280, 720, (480, 848)),
        (1280, 704, (464, 848)),
        (832, 480, (480, 832)),
        (1000, 1000, (640, 640)),
        (1024, 768, (544, 720)),
        (480, 832, (832, 480)),
    ],
)
def test_bucket_resolution_matches_the_official_examples(width, height, bucket):
    assert bucket_resolution(width, height) == bucket


def test_resize_center_crop_covers_then_crops(image):
    cropped = resize_center_crop(image, 64, 64)
    assert cropped.size == (64, 64)
    assert resize_center_crop(image, 160, 90) is image


def test_vision_states_use_the_image_derived_bucket_crop(encoders, image):
    vision = encoders.vision
    states = vision.encode(image)
    assert states.shape == (1, 729, 24)
    # a 16:9 image is cropped to the 848x480 bucket before the processor resizes it
    pixels = np.array(resize_center_crop(image, 848, 480))
    inputs = vision.processor(images=pixels, return_tensors="pt")
    with torch.no_grad():
        expected = vision.model(pixel_values=inputs["pixel_values"]).last_hidden_state
    torch.testing.assert_close(states, expected)


def test_vision_encoder_loads_in_half_precision_by_default(model_dir, image):
    vision = VisionEncoder.from_pretrained(model_dir / SIGLIP_DIR)
    assert vision.encode(image).dtype == torch.float16


def test_condition_batch_is_negative_then_positive(encoders, image):
    states = encoders.encode(PROMPT, image, negative_prompt="blurry", guidance=True)
    assert states.text.shape == (2, 1000, 16) and states.text_mask.shape == (2, 1000)
    assert states.byt5.shape == (2, 256, 1472) and states.vision.shape == (2, 729, 24)
    negative, negative_mask = encoders.prompt.encode(["blurry"])
    positive, _ = encoders.prompt.encode([PROMPT])
    assert torch.equal(states.text[0], negative[0]) and torch.equal(states.text_mask[0], negative_mask[0])
    assert torch.equal(states.text[1], positive[0])
    # the negative branch never sees glyph text, even though the positive prompt has some
    assert not states.byt5[0].any() and not states.byt5_mask[0].any() and states.byt5_mask[1].any()
    assert torch.equal(states.vision[0], states.vision[1])


def test_conditions_without_guidance_or_image(encoders):
    states = encoders.encode("a forest path", image=None, guidance=False)
    assert states.text.shape[0] == states.byt5.shape[0] == states.vision.shape[0] == 1
    assert states.vision.shape == (1, 729, 24) and not states.vision.any()
