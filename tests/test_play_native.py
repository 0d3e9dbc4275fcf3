"""The native engine's live-play chunk source: the open-ended AR stream against the whole-video rollout,
its bounded memory, and `NativeSource` served by a real resident runtime (supervisor + rank subprocesses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trajectories import parse_pose_string
from worker.pipeline.pipeline import GenerationError, GenerationOptions, WorldPlayPipeline
from worker.pipeline.stream import ARStream, live_tensor_bytes

PROMPT = "a lantern-lit alley"
WIDTH, HEIGHT = 16, 32  # 1 x 2 latents: every code path, little compute
# 28 latents: chunk 6 (latents 24..27) is the first whose memory goes through the overlap selection
LONG_POSE = "w-7, right-8, left-8, s-4"


@pytest.fixture(scope="module")
def pipelines(tiny_model_dir):
    cache: dict[str, WorldPlayPipeline] = {}

    def get(variant: str) -> WorldPlayPipeline:
        if variant not in cache:
            if variant in ("bi", "ar"):
                cache[variant] = WorldPlayPipeline.from_model_dir(tiny_model_dir, variant, device="cpu")
            else:
                ar = get("ar")
                cache[variant] = WorldPlayPipeline(variant, ar.transformer, ar.vae, ar.encoders, paths=ar.paths)
        return cache[variant]

    return get


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(90, 60, 3), dtype=np.uint8))


def play_trajectory(stream: ARStream, trajectory, prompts: dict[int, str] | None = None):
    """Feed `trajectory` chunk by chunk (prompt of chunk k: the latest entry of `prompts` at or before k)."""
    count, chunks = stream.chunk_latents, []
    prompt = PROMPT
    for index in range(trajectory.num_latents // count):
        prompt = (prompts or {}).get(index, prompt)
        part = slice(index * count, (index + 1) * count)
        chunks.append(
            stream.step(trajectory.c2w[part], trajectory.normalized_K()[part], trajectory.actions[part], prompt)
        )
    return chunks


@pytest.mark.parametrize(("variant", "options"), [("ar-distilled", {}), ("ar", {"steps": 2, "guidance": 4.0})])
def test_a_stream_fed_a_trajectory_chunk_by_chunk_is_the_whole_video_rollout(pipelines, image, variant, options):
    """Same latents and frames, bit for bit, as `generate` over the whole trajectory with the stream's noise."""
    pipeline = pipelines(variant)
    options = GenerationOptions(width=WIDTH, height=HEIGHT, seed=5, **options)
    trajectory = parse_pose_string(LONG_POSE)
    stream = ARStream(pipeline, image, options)
    chunks = play_trajectory(stream, trajectory)

    # the stream's noise, drawn again from its seed, is what the whole-video run gets
    replay = ARStream(pipeline, image, options)
    noise = torch.cat([replay.next_noise() for _ in chunks], dim=2)
    whole: list[np.ndarray] = []
    result = pipeline.generate(
        PROMPT,
        image,
        trajectory,
        "unused.mp4",
        options,
        noise=noise,
        write_video=lambda frames, *_, **__: whole.extend(frames),
    )
    assert torch.equal(torch.cat([chunk.result.latents for chunk in chunks], dim=2), result.latents)
    assert [chunk.result.context for chunk in chunks] == [record.context for record in result.chunks]
    assert len(chunks[-1].result.context) == 20  # the overlap selection ran
    streamed = np.concatenate([chunk.frames for chunk in chunks])
    assert streamed.shape == (trajectory.num_frames, HEIGHT, WIDTH, 3)
    assert np.array_equal(streamed, np.stack(whole))
    assert [len(chunk.frames) for chunk in chunks] == [13] + [16] * 6


def test_a_prompt_change_encodes_once_and_conditions_the_following_chunks(pipelines, image):
    pipeline = pipelines("ar-distilled")
    options = GenerationOptions(width=WIDTH, height=HEIGHT)
    trajectory = parse_pose_string("w-7, right-8")
    changed = play_trajectory(ARStream(pipeline, image, options), trajectory, {2: "a snowy field", 3: PROMPT})
    steady = play_trajectory(ARStream(pipeline, image, options), trajectory)
    encoded = [chunk.encode_s > 0 for chunk in changed]
    # chunk 0 encodes the first prompt, chunk 2 the new one; going back to the first encodes nothing
    assert encoded == [True, False, True, False]
    assert torch.equal(changed[1].result.latents, steady[1].result.latents)
    assert not torch.equal(changed[2].result.latents, steady[2].result.latents)


def test_a_stream_refuses_a_bidirectional_variant_and_a_wrong_chunk(pipelines, image):
    with pytest.raises(GenerationError, match="bidirectional"):
        ARStream(pipelines("bi"), image, GenerationOptions(width=WIDTH, height=HEIGHT))
    stream = ARStream(pipelines("ar-distilled"), image, GenerationOptions(width=WIDTH, height=HEIGHT))
    with pytest.raises(GenerationError, match="a chunk has 4 latents"):
        stream.step(np.eye(4)[None].repeat(3, 0), np.eye(3)[None].repeat(3, 0), np.zeros(3), PROMPT)


def test_a_hundred_chunk_session_holds_no_more_than_its_latents_and_cameras_beyond_ten(pipelines, image):
    """Live tensor bytes of the whole process (weights, caches, the stream) after 100 chunks are ≤ 1.1× those
    after 10, and what grew is exactly the 90 chunks' latents and cameras."""
    pipeline = pipelines("ar-distilled")
    stream = ARStream(pipeline, image, GenerationOptions(width=WIDTH, height=HEIGHT))
    count = stream.chunk_latents
    c2w = np.repeat(np.eye(4)[None], count, 0)
    intrinsics = np.repeat(np.array([[[0.5, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1]]]), count, 0)
    prompts = ["a quiet street", "a snowy field", "a lantern-lit alley", "a beach", "a forest", "a harbour"]
    measured = {}
    for index in range(100):
        c2w = c2w.copy()
        c2w[:, 2, 3] += 0.1 * np.arange(1, count + 1)  # forward
        # a new prompt every chunk, more than the text cache holds: it evicts, re-encodes and stays bounded
        stream.step(c2w, intrinsics, np.full(count, 1), prompts[index % len(prompts)])
        if index + 1 in (10, 100):
            measured[index + 1] = live_tensor_bytes()
    latent_bytes = 4 * np.prod(stream.chunk_shape)
    camera_bytes = count * (16 * 4 + 9 * 4 + 8 + 16 * 8)  # viewmats, K (fp32), action (int64), w2c (fp64)
    assert measured[100] - measured[10] == 90 * (latent_bytes + camera_bytes)
    assert measured[100] <= 1.1 * measured[10]
