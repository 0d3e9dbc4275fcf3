"""The WAN-5B WorldPlay transformer: released parameter names/shapes, parity with the official passes on the
golden tiny weights (tools/make_wan_golden.py), and its strict loader."""

from __future__ import annotations

import ast
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from golden_util import GOLDEN_DIR, WAN_TRANSFORMER, load_io, regenerate_state_dict
from transformer_util import load_wan_golden_model
from worker.models.checkpoint import CheckpointError
from worker.models.transformer import TransformerConfigError
from worker.models.wan.transformer import (
    WanConfig,
    WanWorldPlayTransformer,
    is_worldplay_addition,
    load_wan_transformer,
    write_tiny_wan_transformer,
)

ATOL = 1e-5
CONTEXT_FRAMES, CHUNK_FRAMES = [0, 1, 2, 5, 6, 7], [8, 9, 10, 11]
T = 888.8889
# the released wan_transformer/config.json (diffusers WanTransformer3DModel, Wan2.2-TI2V-5B)
RELEASED_CONFIG = {
    "_class_name": "WanTransformer3DModel",
    "_diffusers_version": "0.35.0",
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 14336,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 48,
    "num_attention_heads": 24,
    "num_layers": 30,
    "out_channels": 48,
    "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}


@pytest.fixture(scope="module")
def io():
    return load_io("wan_tiny_io.safetensors")


@pytest.fixture(scope="module")
def model():
    return load_wan_golden_model()


def read_shapes(name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (GOLDEN_DIR / name).read_text().splitlines():
        key, shape = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def cameras(io, frames):
    return io["viewmats"][None, frames], io["intrinsics"][None, frames], io["actions"][None, frames]


# -- architecture ---------------------------------------------------------------------------------------


def test_released_model_on_meta_device_has_the_official_names_and_shapes():
    with torch.device("meta"):
        model = WanWorldPlayTransformer()
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == read_shapes("wan_5b_param_shapes.txt")
    assert len(ours) == 889
    assert sum(tensor.numel() for tensor in model.parameters()) == 5_293_225_152
    additions = [name for name in ours if is_worldplay_addition(name)]
    assert len(additions) == 4 + 2 * 30  # the action embedder, and every block's camera output layer


def test_tiny_model_has_the_official_tiny_names_and_shapes():
    with torch.device("meta"):
        model = WanWorldPlayTransformer(WanConfig.tiny())
    assert {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()} == read_shapes(
        "wan_tiny_param_order.txt"
    )


def test_config_reads_the_released_diffusers_config():
    assert WanConfig.from_diffusers_dict(RELEASED_CONFIG) == WanConfig()
    released = {key: value for key, value in RELEASED_CONFIG.items() if not key.startswith("_")}
    assert {key: value for key, value in WanConfig().to_diffusers_dict().items() if key[0] != "_"} == released
    assert WanConfig.from_diffusers_dict(WanConfig.tiny().to_diffusers_dict()) == WanConfig.tiny()
    with pytest.raises(TransformerConfigError, match="qk_norm"):
        WanConfig.from_diffusers_dict({**RELEASED_CONFIG, "qk_norm": "rms_norm"})
    with pytest.raises(TransformerConfigError, match="unknown key 'heads'"):
        WanConfig.from_diffusers_dict({**RELEASED_CONFIG, "heads": 24})
    with pytest.raises(TransformerConfigError, match="patch_size"):
        WanConfig(patch_size=(2, 2, 2))


# -- parity with the official code ----------------------------------------------------------------------


@torch.no_grad()
def test_context_pass_caches_both_branches_like_the_official(model, io):
    text = model.encode_text(io["text"])
    cache = model.forward_context(io["context_latents"], 14.0, text, *cameras(io, CONTEXT_FRAMES))
    assert cache.frames == 6 and cache.batch_size == 1
    # the official cache keeps [rope | camera] along the head dim; ours along the batch: same halves
    for ours, official in ((cache.keys[0], io["cache0_k"]), (cache.values[0], io["cache0_v"])):
        torch.testing.assert_close(torch.cat(ours.chunk(2), dim=-1), official, atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_chunk_pass_with_memory_context_matches_official(model, io):
    text = model.encode_text(io["text"])
    cache = model.forward_context(io["context_latents"], 14.0, text, *cameras(io, CONTEXT_FRAMES))
    out = model.forward_chunk(io["chunk_latents"], T, text, *cameras(io, CHUNK_FRAMES), cache)
    torch.testing.assert_close(out, io["out_cached"], atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_first_i2v_chunk_pass_matches_official(model, io):
    """Chunk 0 of i2v: the image latent at timestep 14 beside three noisy latents, no cache."""
    text = model.encode_text(io["text"])
    timesteps = torch.tensor([[14.0, T, T, T]])
    out = model.forward_chunk(io["chunk_latents"], timesteps, text, *cameras(io, [0, 1, 2, 3]))
    torch.testing.assert_close(out, io["out_first"], atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_actions_and_focal_lengths_condition_the_pass_and_the_principal_point_does_not(model, io):
    text = model.encode_text(io["text"])
    viewmats, intrinsics, actions = cameras(io, [0, 1, 2, 3])
    base = model.forward_chunk(io["chunk_latents"], T, text, viewmats, intrinsics, actions)

    def changed(**inputs) -> float:
        args = {"viewmats": viewmats, "intrinsics": intrinsics, "action": actions, **inputs}
        return (model.forward_chunk(io["chunk_latents"], T, text, **args) - base).abs().max().item()

    assert changed(action=(actions + 1) % 81) > 1e-3
    focal = intrinsics.clone()
    focal[:, 0, 0, 0] *= 1.5  # one latent's: a focal length shared by all latents cancels on a straight walk
    assert changed(intrinsics=focal) > 1e-3
    principal = intrinsics.clone()
    principal[..., :2, 2] = 0.3
    assert changed(intrinsics=principal) == 0.0


# -- loading --------------------------------------------------------------------------------------------


def tiny_state() -> dict[str, torch.Tensor]:
    return regenerate_state_dict(WAN_TRANSFORMER)


@torch.no_grad()
def test_loads_a_diffusers_directory_and_the_distilled_checkpoint(tmp_path, model, io):
    state = tiny_state()
    directory = tmp_path / "wan_transformer"
    directory.mkdir()
    tiny = WanConfig.tiny()
    config = {**RELEASED_CONFIG, **{key: getattr(tiny, key) for key in ("num_attention_heads", "attention_head_dim")}}
    config.update(in_channels=8, out_channels=8, text_dim=16, freq_dim=32, ffn_dim=96, num_layers=2)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(state, str(directory / "diffusion_pytorch_model.safetensors"))
    # the trainer's wrappers, as the released model.pt keys carry them
    distilled = tmp_path / "wan_distilled_model"
    distilled.mkdir()
    wrapped = {f"model._fsdp_wrapped_module.{name}": tensor for name, tensor in state.items()}
    torch.save({"generator": wrapped}, distilled / "model.pt")

    text_states = io["text"]
    expected = model.forward_chunk(io["chunk_latents"], T, model.encode_text(text_states), *cameras(io, [0, 1, 2, 3]))
    for loaded in (
        load_wan_transformer(directory, dtype=torch.float32, attention_backend="sdpa"),
        load_wan_transformer(distilled / "model.pt", tiny, dtype=torch.float32, attention_backend="sdpa"),
        load_wan_transformer(distilled, tiny, dtype=torch.float32, attention_backend="sdpa"),
    ):
        assert loaded.config == tiny and loaded.dtype == torch.float32
        out = loaded.forward_chunk(io["chunk_latents"], T, loaded.encode_text(text_states), *cameras(io, [0, 1, 2, 3]))
        torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert load_wan_transformer(distilled, tiny).dtype == torch.bfloat16


def test_strict_load_refuses_a_wrong_checkpoint_in_one_line(tmp_path):
    tiny = WanConfig.tiny()
    base = {name: tensor for name, tensor in tiny_state().items() if not is_worldplay_addition(name)}
    torch.save({"generator": base}, tmp_path / "base.pt")
    with pytest.raises(CheckpointError) as error:
        load_wan_transformer(tmp_path / "base.pt", tiny)
    message = str(error.value)
    assert "\n" not in message and "missing" in message and "condition_embedder.action_embedder" in message
    assert "model.pt" in error.value.hint

    save_file({"img_in.proj.weight": torch.zeros(4, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit the WAN-5B WorldPlay transformer") as error:
        load_wan_transformer(tmp_path / "other.safetensors", tiny)
    assert "not a WAN-5B WorldPlay transformer checkpoint" in error.value.hint

    torch.save({"model": tiny_state()}, tmp_path / "no_generator.pt")
    with pytest.raises(CheckpointError, match="no 'generator' state dict"):
        load_wan_transformer(tmp_path / "no_generator.pt", tiny)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_wan_transformer(tmp_path / "broken.pt", tiny)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_wan_transformer(tmp_path / "base.pt", replace(tiny, ffn_dim=48))


def test_tiny_writer_makes_both_released_formats(tmp_path):
    directory = write_tiny_wan_transformer(
        tmp_path / "wan_transformer", seed=5, distilled_path=tmp_path / "d" / "model.pt"
    )
    from_directory = load_wan_transformer(directory, dtype=torch.float32)
    from_distilled = load_wan_transformer(tmp_path / "d", WanConfig.tiny(), dtype=torch.float32)
    assert from_directory.config == WanConfig.tiny()
    for (name, ours), (_, theirs) in zip(from_directory.state_dict().items(), from_distilled.state_dict().items()):
        assert torch.equal(ours, theirs), name
