"""The native WorldPlay transformer: config, official parameter names, and parity with the official code."""

from __future__ import annotations

import ast
import json

import pytest
import torch

from golden_util import GOLDEN_DIR, load_io
from transformer_util import golden_prompt, load_golden_model
from worker.models.tiny import GOLDEN_TRANSFORMER_CONFIG
from worker.models.transformer import (
    TransformerConfigError,
    WorldPlayTransformer,
    WorldPlayTransformerConfig,
)

ATOL = 1e-4

RELEASED_CONFIG_JSON = {
    "_class_name": "HunyuanVideo_1_5_DiffusionTransformer",
    "_diffusers_version": "0.35.0",
    "attn_mode": "flash",
    "attn_param": None,
    "concat_condition": True,
    "glyph_byT5_v2": True,
    "guidance_embed": False,
    "heads_num": 16,
    "hidden_size": 2048,
    "ideal_resolution": "480p",
    "ideal_task": "i2v",
    "in_channels": 32,
    "is_reshape_temporal_channels": False,
    "mlp_act_type": "gelu_tanh",
    "mlp_width_ratio": 4,
    "mm_double_blocks_depth": 54,
    "mm_single_blocks_depth": 0,
    "out_channels": 32,
    "patch_size": [1, 1, 1],
    "qk_norm": True,
    "qk_norm_type": "rms",
    "qkv_bias": True,
    "rope_dim_list": [16, 56, 56],
    "rope_theta": 256,
    "text_pool_type": None,
    "text_projection": "single_refiner",
    "text_states_dim": 3584,
    "text_states_dim_2": None,
    "use_attention_mask": True,
    "use_cond_type_embedding": True,
    "use_meanflow": False,
    "vision_projection": "linear",
    "vision_states_dim": 1152,
}


@pytest.fixture(scope="module")
def golden_model(golden_transformer_state):
    return load_golden_model(golden_transformer_state)


@pytest.fixture(scope="module")
def io():
    return load_io("tiny_transformer_io.safetensors")


# -- config -------------------------------------------------------------------------------------------


def test_released_config_json_gives_released_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(RELEASED_CONFIG_JSON))
    assert WorldPlayTransformerConfig.from_json(path) == WorldPlayTransformerConfig()


def test_official_dict_round_trip_keeps_extension_fields():
    tiny = WorldPlayTransformerConfig(hidden_size=64, num_heads=2, rope_axes_dims=(8, 12, 12), byt5_hidden_size=32)
    official = tiny.to_official_dict()
    assert official["byt5_hidden_size"] == 32 and "byt5_states_dim" not in official
    assert WorldPlayTransformerConfig.from_official_dict(official) == tiny


def test_official_config_of_another_architecture_is_rejected():
    with pytest.raises(TransformerConfigError, match="mm_single_blocks_depth=20"):
        WorldPlayTransformerConfig.from_official_dict({**RELEASED_CONFIG_JSON, "mm_single_blocks_depth": 20})
    with pytest.raises(TransformerConfigError, match="unknown key 'hiden_size'"):
        WorldPlayTransformerConfig.from_official_dict({**RELEASED_CONFIG_JSON, "hiden_size": 2048})


def test_own_config_format_rejects_unknown_keys():
    data = WorldPlayTransformerConfig().to_dict()
    assert WorldPlayTransformerConfig.from_dict(data) == WorldPlayTransformerConfig()
    with pytest.raises(TransformerConfigError, match="heads_num"):
        WorldPlayTransformerConfig.from_dict({**data, "heads_num": 16})


def test_inconsistent_config_is_rejected():
    with pytest.raises(TransformerConfigError, match="must sum to head_dim"):
        WorldPlayTransformerConfig(rope_axes_dims=(16, 56, 48))
    with pytest.raises(TransformerConfigError, match="patch_size"):
        WorldPlayTransformerConfig(patch_size=(2, 1, 1))


def test_released_model_on_meta_device_has_the_official_names_and_shapes():
    expected = {}
    for line in (GOLDEN_DIR / "full_480p_i2v_action_param_shapes.txt").read_text().splitlines():
        name, shape = line.split("\t")
        expected[name] = tuple(ast.literal_eval(shape))
    with torch.device("meta"):
        model = WorldPlayTransformer.from_config(WorldPlayTransformerConfig())
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert len(ours) == 1905
    assert ours == expected


def test_parameters_are_registered_in_the_official_order():
    """So seeded random weights drawn in registration order reproduce the golden tiny weights."""
    names = [line.split("\t")[0] for line in (GOLDEN_DIR / "tiny_transformer_param_order.txt").read_text().splitlines()]
    with torch.device("meta"):
        model = WorldPlayTransformer(GOLDEN_TRANSFORMER_CONFIG)
    assert [name for name, _ in model.named_parameters()] == names


# -- parity with the official code --------------------------------------------------------------------


@torch.no_grad()
def test_bidirectional_forward_matches_official(golden_model, io):
    out = golden_model.forward_bi(io["x"], io["t"], golden_prompt(io), io["viewmats"], io["Ks"], io["action"])
    torch.testing.assert_close(out, io["out_bi"], atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_autoregressive_passes_match_official(golden_model, io):
    x, viewmats, ks, action = io["x"], io["viewmats"], io["Ks"], io["action"]
    # 1. text cache at text timestep 0
    cache = golden_model.forward_text(golden_prompt(io), text_timestep=0.0)
    assert cache.text_mask is None
    torch.testing.assert_close(cache.text_keys[0], io["kv0_k_txt"], atol=ATOL, rtol=ATOL)
    # 2. context pass over frames 0..1 at timestep 14
    cache = golden_model.forward_context(x[:, :, :2], viewmats[:, :2], ks[:, :2], action[:, :2], cache, timestep=14.0)
    assert cache.context_frames == 2
    torch.testing.assert_close(cache.context_keys[0], io["kv0_k_vision"], atol=ATOL, rtol=ATOL)
    # 3. chunk pass over frames 2..3 at t, RoPE time 2..3
    out = golden_model.forward_chunk(x[:, :, 2:], io["t"], viewmats[:, 2:], ks[:, 2:], action[:, 2:], cache)
    torch.testing.assert_close(out, io["out_ar"], atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_per_frame_timesteps_equal_a_per_sample_timestep(golden_model, io):
    args = (golden_prompt(io), io["viewmats"], io["Ks"], io["action"])
    per_frame = io["t"].expand(1, 4)
    out = golden_model.forward_bi(io["x"], per_frame, *args, text_timestep=io["t"])
    torch.testing.assert_close(out, io["out_bi"], atol=ATOL, rtol=ATOL)
    with pytest.raises(ValueError, match="text_timestep"):
        golden_model.forward_bi(io["x"], per_frame, *args)


def test_attention_backend_is_reported(golden_model):
    assert golden_model.attention_backend_in_use() == "sdpa"
