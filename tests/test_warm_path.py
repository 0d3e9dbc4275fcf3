"""What a resident pipeline keeps between jobs, or skips, for a new prompt changes no output: the SigLIP states
kept per image, the text pass that stops at the last layer's keys and values, the transformer size counted once
per config (bench/worker_warm.py measures what they save)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from trajectories import parse_pose_string
from worker.models.transformer import from_heads_first, per_sample, to_heads_first
from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline
from worker.pipeline.rollout import AR_TEXT_TIMESTEP
from worldplay_cli.contract.buckets import RESOLUTION_BASE, SUPER_RESOLUTION_BASE

WIDTH, HEIGHT = 16, 32
FIRST, SECOND = "a quiet street", 'a rainy harbour under a sign that reads "DOCK"'


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, size=(90, 60, 3), dtype=np.uint8))


def fresh(pipeline: WorldPlayPipeline) -> WorldPlayPipeline:
    """The same components with nothing kept: the uncached path."""
    return WorldPlayPipeline(
        pipeline.variant, pipeline.transformer, pipeline.vae, pipeline.encoders, paths=pipeline.paths
    )


@pytest.mark.parametrize("variant", ["ar-distilled", "ar", "bi"])
def test_a_new_prompt_on_a_kept_image_makes_what_a_fresh_pipeline_makes(tiny_pipelines, image, variant):
    resident = fresh(tiny_pipelines(variant))
    pose = "w-15" if variant == "bi" else "w-7"
    options = GenerationOptions(width=WIDTH, height=HEIGHT, steps=2)
    resident.generate(FIRST, image, parse_pose_string(pose), None, options)
    hits = resident.vision_cache.hits
    warm = resident.generate(SECOND, image, parse_pose_string(pose), None, options)
    assert resident.vision_cache.hits == hits + 1  # SigLIP skipped for the new prompt
    cold = fresh(resident).generate(SECOND, image, parse_pose_string(pose), None, options)
    assert torch.equal(warm.latents, cold.latents)
    guided = resident.recipe(options)[1] > 1.0
    kept = resident.conditioning(SECOND, image, "", guided)
    computed = fresh(resident).conditioning(SECOND, image, "", guided)
    for kept_prompt, computed_prompt in zip(kept.prompts, computed.prompts, strict=True):
        for name, tensor in vars(kept_prompt).items():
            assert torch.equal(tensor, getattr(computed_prompt, name)), name
    for kept_cache, computed_cache in zip(kept.text_caches or [], computed.text_caches or [], strict=True):
        assert all(map(torch.equal, kept_cache.text_keys + kept_cache.text_values,
                       computed_cache.text_keys + computed_cache.text_values))  # fmt: skip


def test_the_siglip_states_are_kept_per_image_pixels_and_crop_size(tiny_pipelines, image):
    pipeline = fresh(tiny_pipelines("ar-distilled"))
    states = pipeline.vision_states(image, RESOLUTION_BASE["480p"])
    # the same pixels in another image object: the kept states
    assert pipeline.vision_states(image.copy(), RESOLUTION_BASE["480p"]) is states
    assert pipeline.vision_cache.hits == 1
    # other pixels (one changed), another crop size (the SR stage's): encoded anew, and they differ
    pixels = np.asarray(image).copy()
    pixels[45, 30] ^= 0xFF
    other = pipeline.vision_states(Image.fromarray(pixels), RESOLUTION_BASE["480p"])
    sr = pipeline.vision_states(image, SUPER_RESOLUTION_BASE)
    assert pipeline.vision_cache.misses == 3
    assert not torch.equal(other, states) and sr is not states
    assert torch.equal(states, pipeline.encoders.encode_image(image, RESOLUTION_BASE["480p"]))
    # bounded like the conditioning cache: the least recently used image goes first
    for seed in range(100, 100 + pipeline.vision_cache.max_entries):
        noise = np.random.default_rng(seed).integers(0, 256, size=(90, 60, 3), dtype=np.uint8)
        pipeline.vision_states(Image.fromarray(noise), RESOLUTION_BASE["480p"])
    misses = pipeline.vision_cache.misses
    assert pipeline.vision_states(image, RESOLUTION_BASE["480p"]) is not states
    assert pipeline.vision_cache.misses == misses + 1


@torch.inference_mode()
def test_the_text_pass_keeps_what_every_layer_run_whole_gives(tiny_pipelines, image):
    """`forward_text` stops after the last layer's keys and values; run whole, every layer gives the same."""
    pipeline = tiny_pipelines("ar-distilled")
    (prompt,) = pipeline.encode_prompt(SECOND, image, "", guided=False)
    transformer = pipeline.transformer
    cache = transformer.forward_text(prompt, AR_TEXT_TIMESTEP)
    txt, mask, text_vec = transformer.embed_prompt(prompt, per_sample(AR_TEXT_TIMESTEP, 1, transformer.device))
    for index, block in enumerate(transformer.double_blocks):
        modulation = tuple(m.unsqueeze(1) for m in block.txt_mod(text_vec))
        query, key, value = block.text_qkv(txt, modulation)
        assert torch.equal(to_heads_first(key), cache.text_keys[index])
        assert torch.equal(to_heads_first(value), cache.text_values[index])
        attended = transformer.attention_processor(
            to_heads_first(query), to_heads_first(key), to_heads_first(value), mask
        )
        txt = block.finish_text(txt, from_heads_first(attended, query.shape), modulation)
    assert len(cache.text_keys) == len(transformer.double_blocks)


def test_the_transformer_size_is_counted_once_per_config(tiny_model_dir, tmp_path):
    from worker.models.tiny import write_tiny_transformer
    from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig
    from worker.pipeline.families import parameter_count, transformer_scale
    from worker.pipeline.model_dir import resolve_model_dir

    transformer_dir = resolve_model_dir(tiny_model_dir, "ar-distilled").transformer_dir
    config = WorldPlayTransformerConfig.from_json(transformer_dir / "config.json")
    counted = sum(parameter.numel() for parameter in WorldPlayTransformer(config).parameters())
    scale = transformer_scale(transformer_dir, "ar-distilled")
    hits = parameter_count.cache_info().hits
    assert transformer_scale(transformer_dir, "ar-distilled") == scale
    assert parameter_count.cache_info().hits == hits + 1
    assert parameter_count(WorldPlayTransformer, config) == counted
    # another config (one more layer, in the same layout) is counted on its own
    deeper = dataclasses.replace(config, num_layers=config.num_layers + 1)
    write_tiny_transformer(tmp_path, seed=0, config=deeper)
    deeper_dir = tmp_path / transformer_dir.relative_to(tiny_model_dir)
    assert transformer_scale(deeper_dir, "ar-distilled") > scale
    assert parameter_count(WorldPlayTransformer, deeper) > counted
