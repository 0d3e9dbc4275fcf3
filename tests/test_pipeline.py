"""The native generation pipeline on a tiny random model directory: shapes, lengths, determinism,
guidance, memory per chunk, the AR loop against its parts, streaming decode, clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from trajectories import parse_pose_string
from worker.models.scheduler import FlowMatchScheduler, classifier_free_guidance
from worker.pipeline.image import ImageSizeError, generation_size, image_to_video_tensor, to_uint8_frames
from worker.pipeline.memory import sample_points_in_sphere, select_context_latents
from worker.pipeline.pipeline import GenerationError, GenerationOptions, WorldPlayPipeline

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 16, 32  # 1 x 2 latents: every code path, little compute
PROMPT = 'A shop sign that reads "OPEN" above a wooden door'
# 28 latents: chunk 6 (latents 24..27) is the first whose context goes through the overlap selection
LONG_POSE = "w-7, right-8, left-8, s-4"


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(90, 60, 3), dtype=np.uint8))


def run(pipeline, image, pose, output=None, **options):
    frames: list[np.ndarray] = []

    def collect(stream, path, fps):
        frames.extend(stream)

    options = GenerationOptions(width=WIDTH, height=HEIGHT, **options)
    result = pipeline.generate(
        PROMPT, image, parse_pose_string(pose), output or "unused.mp4", options, write_video=collect
    )
    return result, frames


def denoise(pipeline, image, pose, **options):
    """Only the rollout (no VAE decode): the chunks and the whole latent video."""
    options = GenerationOptions(width=WIDTH, height=HEIGHT, **options)
    prepared = pipeline.prepare(PROMPT, image, parse_pose_string(pose), options)
    chunks = list(pipeline.rollout(prepared, options))
    return chunks, torch.cat([chunk.latents for chunk in chunks], dim=2)


@pytest.mark.parametrize(
    ("variant", "pose", "chunks"),
    [("ar", "w-7", 2), ("ar-rl", "w-3, right-4", 2), ("ar-distilled", "w-3", 1), ("bi", "w-15", 1)],
)
def test_every_variant_makes_the_promised_video(tiny_pipelines, image, variant, pose, chunks):
    pipeline = tiny_pipelines(variant)
    trajectory = parse_pose_string(pose)
    result, frames = run(pipeline, image, pose, steps=2)
    assert len(frames) == trajectory.num_frames == result.num_frames
    assert all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in frames)
    assert len(result.chunks) == chunks
    chunk = pipeline.chunk_latents
    assert [record.latents for record in result.chunks] == [(i * chunk, (i + 1) * chunk) for i in range(chunks)]
    assert result.latents.shape == (1, 4, trajectory.num_latents, HEIGHT // 16, WIDTH // 16)
    assert {"encode", "denoise", "decode"} <= set(result.stages)


def test_variant_recipes(tiny_pipelines):
    assert tiny_pipelines("ar-distilled").recipe(GenerationOptions()) == (4, 1.0)
    assert tiny_pipelines("ar").recipe(GenerationOptions()) == (50, 6.0)
    assert tiny_pipelines("bi").recipe(GenerationOptions(steps=3, guidance=2.0)) == (3, 2.0)


def test_same_seed_same_video_other_seed_other_video(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    _, first = denoise(pipeline, image, "w-7", seed=5)
    _, again = denoise(pipeline, image, "w-7", seed=5)
    _, other = denoise(pipeline, image, "w-7", seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_injected_noise_replaces_the_seeded_noise(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    trajectory = parse_pose_string("w-7")
    options = GenerationOptions(width=WIDTH, height=HEIGHT, seed=3)
    seeded = pipeline.generate(PROMPT, image, trajectory, None, options)
    noise = torch.randn((1, 4, 8, 2, 1), generator=torch.Generator().manual_seed(3))
    injected = pipeline.generate(
        PROMPT, image, trajectory, None, GenerationOptions(width=WIDTH, height=HEIGHT, seed=99), noise=noise
    )
    assert torch.equal(seeded.latents, injected.latents)
    with pytest.raises(GenerationError, match="injected noise has shape"):
        pipeline.prepare(PROMPT, image, trajectory, options, noise=torch.zeros(1, 4, 8, 1, 2))


@pytest.mark.parametrize("variant", ["ar", "bi"])
def test_guidance_doubles_the_branches_and_changes_the_result(tiny_pipelines, image, variant):
    pipeline = tiny_pipelines(variant)
    pose = "w-15" if variant == "bi" else "w-3"
    calls: list[int] = []
    method = "forward_bi" if variant == "bi" else "forward_chunk"
    original = getattr(pipeline.transformer, method)

    def spy(hidden_states, *args, **kwargs):
        calls.append(hidden_states.shape[0])
        return original(hidden_states, *args, **kwargs)

    setattr(pipeline.transformer, method, spy)
    try:
        _, guided = denoise(pipeline, image, pose, steps=2, guidance=6.0)
        guided_calls, calls[:] = list(calls), []
        _, plain = denoise(pipeline, image, pose, steps=2, guidance=1.0)
    finally:
        delattr(pipeline.transformer, method)
    if variant == "bi":
        # one batched forward per step: [uncond, cond]
        assert guided_calls == [2, 2] and calls == [1, 1]
    else:
        # one forward per branch and step, each against its own caches
        assert guided_calls == [1, 1, 1, 1] and calls == [1, 1]
    assert not torch.equal(guided, plain)


def test_memory_selection_conditions_every_chunk(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    trajectory = parse_pose_string(LONG_POSE)
    context_calls: list[int] = []
    original = pipeline.transformer.forward_context

    def spy(hidden_states, *args, **kwargs):
        context_calls.append(hidden_states.shape[2])
        return original(hidden_states, *args, **kwargs)

    pipeline.transformer.forward_context = spy
    try:
        chunks, _ = denoise(pipeline, image, LONG_POSE, steps=1)
    finally:
        del pipeline.transformer.forward_context
    points = sample_points_in_sphere()
    expected = [select_context_latents(trajectory.viewmats(), start, 4, points) for start in range(0, 28, 4)]
    assert [chunk.context for chunk in chunks] == expected
    # the overlap test, not just recency, picked the clip of chunk 6
    assert chunks[6].context == [0, 1, 2, 3, 4, 5, 6, 7, *range(12, 24)]
    # the transformer saw exactly the selected latents, rebuilt for every chunk
    assert context_calls == [len(context) for context in expected if context]


def test_bi_chunks_take_the_memory_union_of_their_sub_starts(tiny_pipelines, image):
    pipeline = tiny_pipelines("bi")
    pose = "w-15, right-16"
    chunks, _ = denoise(pipeline, image, pose, steps=1, guidance=1.0)
    trajectory = parse_pose_string(pose)
    assert chunks[0].context == []
    assert chunks[1].context == select_context_latents(trajectory.viewmats(), 16, 16, sample_points_in_sphere())


def test_ar_rollout_is_exactly_the_composition_of_its_parts(tiny_pipelines, image):
    """The loop adds nothing: text cache, per-chunk context rebuild, guided Euler steps with bf16 storage."""
    pipeline = tiny_pipelines("ar")
    trajectory = parse_pose_string(LONG_POSE)
    options = GenerationOptions(width=WIDTH, height=HEIGHT, steps=2, guidance=4.0)
    prepared = pipeline.prepare(PROMPT, image, trajectory, options)
    produced = torch.cat([chunk.latents for chunk in pipeline.rollout(prepared, options)], dim=2)

    transformer, inputs = pipeline.transformer, prepared.inputs
    scheduler = FlowMatchScheduler(2)
    with torch.inference_mode():
        latents = inputs.noise.to(torch.bfloat16).float()
        text_caches = [transformer.forward_text(prompt, 0.0) for prompt in inputs.prompts]
        for start in range(0, 28, 4):
            frames = slice(start, start + 4)
            context = select_context_latents(trajectory.viewmats(), start, 4, sample_points_in_sphere())
            caches = text_caches
            if context:
                clean = torch.cat([latents[:, :, context], inputs.cond[:, :, context]], dim=1)
                cameras = (inputs.viewmats[:, context], inputs.intrinsics[:, context], inputs.actions[:, context])
                caches = [transformer.forward_context(clean, *cameras, cache, 14.0) for cache in text_caches]
            x = latents[:, :, frames]
            for step, timestep in enumerate(scheduler.timesteps):
                hidden = torch.cat([x, inputs.cond[:, :, frames]], dim=1)
                cameras = (inputs.viewmats[:, frames], inputs.intrinsics[:, frames], inputs.actions[:, frames])
                uncond, cond = (transformer.forward_chunk(hidden, float(timestep), *cameras, cache) for cache in caches)
                velocity = classifier_free_guidance(uncond, cond, 4.0)
                x = scheduler.step(velocity, step, x).to(torch.bfloat16).float()
            latents[:, :, frames] = x
    assert torch.equal(produced, latents)


def test_latent_rounding_is_an_option(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    _, rounded = denoise(pipeline, image, "w-3", round_latents=True)
    _, exact = denoise(pipeline, image, "w-3", round_latents=False)
    assert torch.equal(rounded, rounded.to(torch.bfloat16).float())
    assert not torch.equal(rounded, exact)
    torch.testing.assert_close(rounded, exact, atol=0.1, rtol=0)


@pytest.mark.parametrize("variant", ["ar", "bi"])
@pytest.mark.parametrize("round_latents", [True, False])
def test_rollouts_leave_their_inputs_untouched(tiny_pipelines, image, variant, round_latents):
    pipeline = tiny_pipelines(variant)
    options = GenerationOptions(width=WIDTH, height=HEIGHT, steps=1, round_latents=round_latents)
    prepared = pipeline.prepare(PROMPT, image, parse_pose_string("w-15"), options)
    inputs = prepared.inputs
    before = {
        name: getattr(inputs, name).clone() for name in ("noise", "cond", "viewmats", "intrinsics", "actions", "w2c")
    }
    chunks = list(pipeline.rollout(prepared, options))
    assert not torch.equal(chunks[0].latents, before["noise"][:, :, : chunks[0].end])
    for name, tensor in before.items():
        assert torch.equal(getattr(inputs, name), tensor), f"{name} was written by the {variant} rollout"


def test_streaming_decode_equals_decoding_the_whole_video(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    streamed, streamed_frames = run(pipeline, image, "w-7", streaming_decode=True)
    whole, whole_frames = run(pipeline, image, "w-7", streaming_decode=False)
    assert torch.equal(streamed.latents, whole.latents)
    assert len(streamed_frames) == len(whole_frames) == 29
    assert all(np.array_equal(a, b) for a, b in zip(streamed_frames, whole_frames))
    assert all(record.decode_s > 0 for record in streamed.chunks)


@pytest.mark.parametrize(("variant", "pose", "hint"), [("ar", "w-5", "29 frames"), ("bi", "w-7", "61 frames")])
def test_incompatible_frame_counts_are_refused(tiny_pipelines, image, variant, pose, hint):
    with pytest.raises(GenerationError, match="not a multiple") as error:
        run(tiny_pipelines(variant), image, pose)
    assert hint in error.value.hint


# --- image preprocessing and pixels (no model needed) ---------------------------------------------------


def test_generation_size_from_the_image_bucket_or_the_user():
    assert generation_size(Image.new("RGB", (1920, 1080))) == (848, 480)
    assert generation_size(Image.new("RGB", (1280, 704))) == (848, 464)
    assert generation_size(Image.new("RGB", (500, 500))) == (640, 640)
    assert generation_size(Image.new("RGB", (1920, 1080)), 832, 480) == (832, 480)
    with pytest.raises(ImageSizeError):
        generation_size(Image.new("RGB", (10, 10)), 100, 64)
    with pytest.raises(ImageSizeError):
        generation_size(Image.new("RGB", (10, 10)), 64, None)


def test_image_tensor_is_a_centre_crop_in_minus_one_to_one():
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, 20:60] = 255  # a white centre band exactly as wide as the crop
    tensor = image_to_video_tensor(Image.fromarray(pixels), 32, 32)
    assert tensor.shape == (1, 3, 1, 32, 32)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert tensor[..., 8:24, 4:28].min() > 0.9  # the band fills the crop, away from resampling ringing


def test_pixels_round_unless_official_truncation_is_asked_for():
    video = torch.tensor([0.999, -1.5, 0.0, 0.5]).view(1, 1, 1, 1, 4).expand(1, 3, 1, 1, 4) * 1.0
    rounded = to_uint8_frames(video)[0, 0, :, 0]
    truncated = to_uint8_frames(video, truncate=True)[0, 0, :, 0]
    assert rounded.tolist() == [255, 0, 128, 191]
    assert truncated.tolist() == [254, 0, 127, 191]


def test_each_chunk_reaches_the_writer_before_the_next_chunk_is_denoised(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    events: list[tuple[str, int]] = []
    options = GenerationOptions(width=WIDTH, height=HEIGHT, steps=1)

    def frame_filter(index, frame):
        events.append(("frame", index))
        return frame

    pipeline.generate(
        PROMPT,
        image,
        parse_pose_string("w-7"),
        None,
        options,
        on_step=lambda event: events.append(("step", event.chunk)),
        frame_filter=frame_filter,
    )
    # chunk 0 decodes to frames 0..12, chunk 1 to 13..28
    step_position = events.index(("step", 1))
    assert events.index(("frame", 12)) < step_position < events.index(("frame", 13))


def test_cameras_reach_the_model_rounded_to_bf16_unless_asked_otherwise(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    trajectory = parse_pose_string("w-3, right-4")
    rounded = pipeline.prepare(PROMPT, image, trajectory, GenerationOptions(width=WIDTH, height=HEIGHT)).inputs
    exact = pipeline.prepare(
        PROMPT, image, trajectory, GenerationOptions(width=WIDTH, height=HEIGHT, round_cameras=False)
    ).inputs
    assert torch.equal(rounded.viewmats, rounded.viewmats.to(torch.bfloat16).float())
    assert torch.equal(exact.viewmats[0], torch.tensor(trajectory.viewmats(), dtype=torch.float32))
    assert not torch.equal(rounded.viewmats, exact.viewmats)
    # memory selection always sees the exact float64 poses
    assert torch.equal(rounded.w2c, torch.tensor(trajectory.viewmats(), dtype=torch.float64))


def test_super_resolution_is_refused_before_anything_runs_with_what_would_work(tiny_pipelines, image):
    ar = tiny_pipelines("ar")
    options = GenerationOptions(width=WIDTH, height=HEIGHT, super_resolution=True)
    with pytest.raises(GenerationError, match="--sr needs a 480p bucket size and 16x32 is not one") as error:
        ar.prepare(PROMPT, image, parse_pose_string("w-3"), options)
    assert "848x480" in error.value.hint
    # without the SR weights in the model directory: the download command that fetches them
    paths = dataclasses.replace(ar.paths, sr_transformer_dir=None, sr_upsampler_dir=None)
    bare = WorldPlayPipeline("ar", ar.transformer, ar.vae, ar.encoders, paths=paths)
    options = GenerationOptions(width=848, height=480, super_resolution=True)
    with pytest.raises(GenerationError, match="super-resolution weights are not in") as error:
        bare.prepare(PROMPT, image, parse_pose_string("w-3"), options)
    assert f"worldplay download sr --model-dir {paths.root}" in error.value.hint


def test_a_repeated_prompt_and_image_reuse_their_conditioning(tiny_pipelines, image):
    """The resident pipeline keeps encoder states and text K/V per (prompt, negative, image): a repeat
    encodes nothing and makes the same video; another prompt or image is encoded once."""
    pipeline = tiny_pipelines("ar")  # guided: two branches, each with its text K/V
    cache = pipeline.conditioning_cache
    cache.clear()
    misses, hits = cache.misses, cache.hits
    first, first_frames = run(pipeline, image, "w-3")
    assert (cache.misses - misses, cache.hits - hits) == (2, 0)  # the image condition, the prompt's conditioning
    misses, hits = cache.misses, cache.hits
    second, second_frames = run(pipeline, image, "w-3")
    assert (cache.misses - misses, cache.hits - hits) == (0, 2)
    np.testing.assert_array_equal(np.stack(first_frames), np.stack(second_frames))
    conditioning = pipeline.conditioning(PROMPT, image, "", guided=True)
    assert len(conditioning.text_caches) == 2 and conditioning.nbytes > 0
    other_image = Image.fromarray(np.asarray(image)[::-1].copy())
    run(pipeline, other_image, "w-3")
    assert cache.misses == misses + 2  # a new image: its condition latent and its SigLIP tokens
    # the bi model has no AR text pass: only encoder states are kept
    assert tiny_pipelines("bi").conditioning(PROMPT, image, "", guided=False).text_caches is None


def test_the_conditioning_cache_is_bounded_by_entries_and_bytes():
    from worker.pipeline.pipeline import ConditioningCache

    cache = ConditioningCache(max_entries=2, max_bytes=100)
    cache.put(("a",), "A", 40)
    cache.put(("b",), "B", 40)
    assert cache.get(("a",)) == "A"  # now the most recent
    cache.put(("c",), "C", 40)  # over both bounds: the least recently used ("b") goes
    assert cache.get(("b",)) is None and cache.get(("a",)) == "A" and cache.get(("c",)) == "C"
    cache.put(("huge",), "H", 101)  # never kept
    assert cache.get(("huge",)) is None and cache.nbytes == 80
    nothing = ConditioningCache(max_bytes=0)
    nothing.put(("a",), "A", 1)
    assert nothing.get(("a",)) is None
