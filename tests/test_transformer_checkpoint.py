"""Loading the official model-directory layout: strictness, readable errors, shards, dtypes, tiny writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from golden_util import load_io
from transformer_util import golden_prompt
from worker.models.checkpoint import (
    INDEX_NAME,
    CheckpointError,
    action_checkpoint_path,
    load_transformer,
    load_weights,
)
from worker.models.tiny import GOLDEN_TRANSFORMER_CONFIG, write_tiny_transformer
from worker.models.transformer import TransformerConfigError, WorldPlayTransformer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_transformer(tmp_path_factory.mktemp("tiny"), seed=0)


def test_tiny_writer_reproduces_the_golden_weights_and_they_load_strictly(tmp_path, golden_transformer_state):
    root = write_tiny_transformer(tmp_path, seed=1, scale=0.05, config=GOLDEN_TRANSFORMER_CONFIG)
    written = load_file(str(root / "ar_model" / "diffusion_pytorch_model.safetensors"))
    assert written.keys() == golden_transformer_state.keys()
    assert all(torch.equal(written[name], golden_transformer_state[name]) for name in written)
    model = load_transformer(root, action_checkpoint_path(root, "ar"), dtype=torch.float32)
    io = load_io("tiny_transformer_io.safetensors")
    with torch.no_grad():
        out = model.forward_bi(io["x"], io["t"], golden_prompt(io), io["viewmats"], io["Ks"], io["action"])
    torch.testing.assert_close(out, io["out_bi"], atol=1e-4, rtol=1e-4)


def test_tiny_writer_without_a_scale_writes_the_modules_own_initialisation(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    root = write_tiny_transformer(tmp_path / "a", seed=4, scale=None)
    # the global RNG is untouched, and the weights depend on the seed only
    assert torch.equal(torch.rand(1), expected_next)
    again = write_tiny_transformer(tmp_path / "b", seed=4, scale=None)
    first = load_file(str(root / "ar_model" / "diffusion_pytorch_model.safetensors"))
    second = load_file(str(again / "ar_model" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(first[name], second[name]) for name in first)
    model = load_transformer(root, action_checkpoint_path(root, "ar"), dtype=torch.float32)
    block = model.double_blocks[0]
    # unit query/key norm weights (not 0.05-scaled): attention can be sharp from the first step
    assert torch.equal(block.img_attn_q_norm.weight, torch.ones_like(block.img_attn_q_norm.weight))
    fan_in = block.img_attn_q.weight.shape[1]
    assert block.img_attn_q.weight.abs().max() <= fan_in**-0.5


def test_action_checkpoint_replaces_every_base_weight(tiny_dir):
    model = load_transformer(tiny_dir, tiny_dir / "bidirectional_model", dtype=torch.float32)
    action = load_file(str(tiny_dir / "bidirectional_model" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(tiny_dir / "transformer" / "480p_i2v" / "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert state.keys() == action.keys()
    assert all(torch.equal(state[name], action[name]) for name in state)
    assert not torch.equal(state["img_in.proj.weight"], base["img_in.proj.weight"])
    assert not model.training and not any(parameter.requires_grad for parameter in model.parameters())


def test_base_weights_alone_name_the_missing_action_parameters(tiny_dir):
    with pytest.raises(CheckpointError) as error:
        load_transformer(tiny_dir, dtype=torch.float32)
    message = str(error.value)
    assert "8 missing: double_blocks.0.img_attn_prope_proj.weight" in message and "action_in.mlp.0.weight" in message
    assert "pass an action checkpoint" in error.value.hint
    # not strict: the action parameters start at zero, i.e. no action effect
    model = load_transformer(tiny_dir, dtype=torch.float32, strict=False)
    assert torch.count_nonzero(model.double_blocks[1].img_attn_prope_proj.weight) == 0
    assert torch.count_nonzero(model.img_in.proj.weight) > 0


def test_sharded_checkpoint_loads_like_the_single_file(tiny_dir, tmp_path):
    state = load_file(str(tiny_dir / "ar_model" / "diffusion_pytorch_model.safetensors"))
    names = list(state)
    shards = {"part-1.safetensors": names[: len(names) // 2], "part-2.safetensors": names[len(names) // 2 :]}
    weight_map = {}
    for file_name, shard_names in shards.items():
        save_file({name: state[name] for name in shard_names}, str(tmp_path / file_name))
        weight_map.update(dict.fromkeys(shard_names, file_name))
    (tmp_path / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = load_transformer(tiny_dir, tmp_path, dtype=torch.float32)
    assert all(torch.equal(model.state_dict()[name], state[name]) for name in names)
    (tmp_path / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="part-2.safetensors"):
        load_transformer(tiny_dir, tmp_path)


def test_truncated_checkpoint_is_reported_as_such(tiny_dir, tmp_path):
    data = (tiny_dir / "ar_model" / "diffusion_pytorch_model.safetensors").read_bytes()
    truncated = tmp_path / "diffusion_pytorch_model.safetensors"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as error:
        load_transformer(tiny_dir, truncated)
    assert str(truncated) in str(error.value) and "truncated or corrupt" in error.value.hint
    with pytest.raises(CheckpointError, match="does not exist"):
        load_transformer(tiny_dir, tmp_path / "absent.safetensors")


def test_checkpoint_of_another_model_is_rejected(tiny_dir, tmp_path):
    vae_like = tmp_path / "vae.safetensors"
    vae_state = {"encoder.conv_in.conv.weight": torch.zeros(8, 3, 3, 3), "decoder.conv_out.conv.bias": torch.zeros(3)}
    save_file(vae_state, str(vae_like))
    with pytest.raises(CheckpointError) as error:
        load_transformer(tiny_dir, vae_like)
    assert "2 unexpected: decoder.conv_out.conv.bias, encoder.conv_in.conv.weight" in str(error.value)
    assert "not a WorldPlay transformer checkpoint" in error.value.hint


def test_converted_and_mis_shaped_checkpoints_get_specific_hints(tiny_dir, tmp_path):
    state = load_file(str(tiny_dir / "ar_model" / "diffusion_pytorch_model.safetensors"))
    converted = dict(state)
    for stream in ("img", "txt"):
        parts = [converted.pop(f"double_blocks.0.{stream}_attn_{name}.weight") for name in "qkv"]
        converted[f"double_blocks.0.{stream}_attn_qkv.weight"] = torch.cat(parts)
    save_file(converted, str(tmp_path / "converted.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_transformer(tiny_dir, tmp_path / "converted.safetensors")
    assert "converted" in error.value.hint
    # a checkpoint whose shapes disagree with config.json
    config_path = tmp_path / "transformer" / "480p_i2v" / "config.json"
    config_path.parent.mkdir(parents=True)
    config = json.loads((tiny_dir / "transformer" / "480p_i2v" / "config.json").read_text())
    config_path.write_text(json.dumps({**config, "hidden_size": 96, "heads_num": 3}))
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path, tiny_dir / "ar_model")
    assert "mis-shaped: byt5_in.fc3.weight (model [96, 64], file [64, 64])" in str(error.value)
    assert "different architecture" in error.value.hint
    config_path.write_text(json.dumps({**config, "mm_single_blocks_depth": 2}))
    with pytest.raises(TransformerConfigError, match="mm_single_blocks_depth"):
        load_transformer(tmp_path, tiny_dir / "ar_model")


def test_dtype_cast_on_load(tiny_dir):
    model = load_transformer(tiny_dir, tiny_dir / "ar_distilled_action_model", dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    # a bf16 model takes fp32 inputs and stays close to the fp32 model
    reference = load_transformer(tiny_dir, tiny_dir / "ar_distilled_action_model", dtype=torch.float32)
    io = load_io("tiny_transformer_io.safetensors")
    args = (io["x"], io["t"], golden_prompt(io), io["viewmats"], io["Ks"], io["action"])
    with torch.no_grad():
        out = model.forward_bi(*args)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), reference.forward_bi(*args), atol=0.05, rtol=0)
    with torch.device("meta"):
        meta_model = WorldPlayTransformer(model.config)
    report = load_weights(meta_model, tiny_dir / "ar_rl_model")
    assert report.ok and report.loaded == len(model.state_dict())
    assert meta_model.img_in.proj.weight.dtype == torch.float32


def test_variant_names_map_to_official_directories(tiny_dir):
    assert action_checkpoint_path(tiny_dir, "ar-distilled").name == "ar_distilled_action_model"
    with pytest.raises(CheckpointError, match="unknown model variant"):
        action_checkpoint_path(tiny_dir, "distilled")
