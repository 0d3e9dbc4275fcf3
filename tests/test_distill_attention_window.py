"""Attention sink + local window: the training block mask and the inference context eviction against
brute-force references (the fact sheet's mask formula token by token; a rolling cache that evicts)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from worker.models.attention import AttentionProcessor
from worker.models.transformer import AttentionWindow


def test_visible_chunks_follow_the_mask_formula_frame_by_frame():
    for chunk in (1, 2, 3, 4):
        for sink in range(0, 3 * chunk, chunk):
            for local in range(sink + chunk, sink + 6 * chunk, chunk):
                window = AttentionWindow(sink, local)
                for index in range(8):
                    end = (index + 1) * chunk
                    # kv < end(q) and (kv < sink or kv >= end(q) - (local - sink)), per latent
                    frames = [kv for kv in range(end) if kv < sink or kv >= end - (local - sink)]
                    chunks = sorted({frame // chunk for frame in frames})
                    assert window.visible_chunks(index, chunk) == chunks, (chunk, sink, local, index)
    with pytest.raises(ValueError, match="sink_latents < local_window_latents"):
        AttentionWindow(4, 4)
    with pytest.raises(ValueError, match="multiples"):
        AttentionWindow(1, 6).check_chunks(4)


def test_inference_context_is_a_rolling_cache_that_never_evicts_the_sink():
    for chunk, sink, local in [(4, 4, 12), (4, 0, 8), (3, 1, 6), (4, 2, 20)]:
        window = AttentionWindow(sink, local)
        cache: list[int] = []
        for start in range(0, 400, chunk):
            context = window.context_latents(start, chunk)
            assert context == cache, (chunk, sink, local, start)
            assert len(context) <= local - chunk
            assert context[: min(sink, start)] == list(range(min(sink, start)))
            # append the chunk, then evict the oldest latents after the sink until the next chunk fits
            cache += list(range(start, start + chunk))
            while len(cache) > local - chunk:
                oldest = next(position for position, frame in enumerate(cache) if frame >= sink)
                del cache[oldest]


class DenseMaskReference(AttentionProcessor):
    """Plain attention over every key up to the query chunk's end, masked by the fact-sheet formula on
    token positions: the brute force the chunk-part selection must equal."""

    def __init__(self, text_length: int, frame_tokens: int, sink: int, local: int):
        super().__init__("sdpa")
        self.text_length, self.frame_tokens, self.sink, self.local = text_length, frame_tokens, sink, local

    def __call__(self, query, key, value, key_mask=None):
        image = key.shape[2] - self.text_length
        position = torch.arange(image)
        recent = (self.local - self.sink) * self.frame_tokens
        allowed = (position < self.sink * self.frame_tokens) | (position >= image - recent)
        mask = torch.cat([torch.ones(self.text_length, dtype=torch.bool), allowed]).expand(key.shape[0], -1)
        if key_mask is not None:
            mask = mask & key_mask
        return super().__call__(query, key, value, mask)


def test_the_windowed_chunk_causal_pass_equals_the_dense_mask_brute_force():
    from worker.models.tiny import TINY_TRANSFORMER_CONFIG, random_state_dict
    from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer

    model = WorldPlayTransformer(TINY_TRANSFORMER_CONFIG)
    model.load_state_dict(random_state_dict(TINY_TRANSFORMER_CONFIG, 0, None))
    generator = torch.Generator().manual_seed(0)
    frames, chunk = 10, 2
    hidden = torch.randn(1, 9, frames, 2, 3, generator=generator)
    prompt = PromptEmbeddings(
        torch.randn(1, 5, 16, generator=generator),
        torch.ones(1, 5, dtype=torch.long),
        torch.randn(1, 2, 1472, generator=generator),
        torch.zeros(1, 2, dtype=torch.long),
        torch.randn(1, 3, 24, generator=generator),
    )
    viewmats = torch.eye(4).repeat(1, frames, 1, 1)
    viewmats[:, :, 0, 3] = torch.randn(1, frames, generator=generator)
    intrinsics = torch.tensor([[0.5, 0, 0.5], [0, 0.8, 0.5], [0, 0, 1.0]]).repeat(1, frames, 1, 1)
    actions = torch.randint(0, 81, (1, frames), generator=generator)
    timestep = torch.rand(1, frames, generator=generator) * 1000
    cache = model.forward_text(prompt, 0.0)
    text_length = cache.text_keys[0].shape[2]
    with torch.no_grad():
        for sink, local in [(2, 4), (0, 4), (2, 6), (4, 6)]:
            window = AttentionWindow(sink, local)
            ours = model.forward_chunk_causal(hidden, timestep, viewmats, intrinsics, actions, cache, chunk, window)
            model.set_attention_processor(DenseMaskReference(text_length, 6, sink, local))
            reference = model.forward_chunk_causal(hidden, timestep, viewmats, intrinsics, actions, cache, chunk)
            model.set_attention_processor(AttentionProcessor("sdpa"))
            torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
        # a window wider than the clip is no window; a narrow one changes the late chunks only
        plain = model.forward_chunk_causal(hidden, timestep, viewmats, intrinsics, actions, cache, chunk)
        wide = model.forward_chunk_causal(
            hidden, timestep, viewmats, intrinsics, actions, cache, chunk, AttentionWindow(2, 20)
        )
        torch.testing.assert_close(wide, plain)
        narrow = model.forward_chunk_causal(
            hidden, timestep, viewmats, intrinsics, actions, cache, chunk, AttentionWindow(2, 4)
        )
        torch.testing.assert_close(narrow[:, :, :4], plain[:, :, :4])
        assert not torch.allclose(narrow[:, :, 6:], plain[:, :, 6:])


def test_the_student_rollout_and_the_ar_rollout_keep_the_same_window():
    from train_fixtures import prepared_dataset, tiny_model_dir, train_config_data
    from worker.models.checkpoint import load_transformer
    from worker.models.scheduler import FlowMatchScheduler
    from worker.pipeline.memory import sample_points_in_sphere
    from worker.pipeline.rollout import RolloutInputs, ar_rollout
    from worker.training.batches import SampleBuilder
    from worker.training.dataset import PreparedDataset
    from worker.training.self_forcing import Draws, SelfForcing, full_condition
    from worldplay_cli.contract.training import validate_config

    method = {
        "name": "self_forcing",
        "window_latents": 16,
        "sink_latents": 4,
        "local_window_latents": 12,
        "student_sample_type": "ode",
        "last_step_only": True,
        "critic": {"learning_rate": 1e-3},
    }
    config = validate_config(train_config_data(prepared_dataset().parent / "unused", method=method)).method
    dataset = PreparedDataset(prepared_dataset())
    batch = SampleBuilder(dataset, config, 0, 0.0).batch(0, 0, 1, 0, 1, 1)
    student = load_transformer(tiny_model_dir(), tiny_model_dir() / "ar_model", dtype=torch.float32)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        rolled = SelfForcing(config, dataset.negative_prompt(), 0).rollout(
            student, batch, Draws(generator, generator), with_grad=False
        )
    generator = torch.Generator().manual_seed(5)
    inputs = RolloutInputs(
        noise=torch.cat([torch.randn(1, 4, 4, 2, 2, generator=generator) for _ in range(4)], dim=2),
        cond=full_condition(batch),
        viewmats=batch.viewmats,
        intrinsics=batch.intrinsics,
        actions=batch.actions,
        w2c=batch.viewmats[0].double(),
        prompts=[batch.prompt],
        points=sample_points_in_sphere(2000),
    )
    window = AttentionWindow(4, 12)
    with torch.no_grad():
        chunks = list(
            ar_rollout(
                student, FlowMatchScheduler(4, 5.0), inputs, 1.0, 4, round_latents=False, attention_window=window
            )
        )
    # the last chunk keeps the sink and the 8 latents before it, not all 12
    assert [chunk.context for chunk in chunks] == [
        [],
        [0, 1, 2, 3],
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 2, 3, 8, 9, 10, 11],
    ]
    torch.testing.assert_close(rolled, torch.cat([chunk.latents for chunk in chunks], dim=2), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        unwindowed = list(ar_rollout(student, FlowMatchScheduler(4, 5.0), inputs, 1.0, 4, round_latents=False))
    assert not torch.allclose(unwindowed[-1].latents, chunks[-1].latents)


def test_generate_takes_the_attention_window_as_a_pipeline_option(tmp_path):
    from train_fixtures import tiny_model_dir
    from trajectories import resolve
    from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline

    pipeline = WorldPlayPipeline.from_model_dir(tiny_model_dir(), "ar-distilled", device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    options = GenerationOptions(width=32, height=32, attention_window=AttentionWindow(4, 12))
    prepared = pipeline.prepare("a room", image, resolve("w-31"), options)
    contexts = [chunk.context for chunk in pipeline.rollout(prepared, options)]
    # 32 latents in 4-latent chunks: the sink and the 4 latents before each chunk, never more
    assert contexts[-1] == [0, 1, 2, 3, 24, 25, 26, 27] and max(len(context) for context in contexts) == 8
    with pytest.raises(ValueError, match="multiples"):
        list(pipeline.rollout(prepared, replace(options, attention_window=AttentionWindow(2, 12))))
