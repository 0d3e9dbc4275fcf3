"""Live play on the WAN-5B family: `WanStream` fed chunk by chunk is the batch rollout (text- and
image-to-video), and a session on a real worker and Redis plays the tiny WAN model and records its video."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trajectories import parse_pose_string
from worker.pipeline.pipeline import GenerationError, GenerationOptions

PROMPT = "a red car on a coast road"
# 32x32 frames are 2x2 latents, one token per latent: every code path, little compute
OPTIONS = GenerationOptions(width=32, height=32, seed=5)


@pytest.fixture(scope="module")
def pipeline(tiny_wan_model_dir):
    from worker.pipeline.families import load_pipeline

    return load_pipeline(tiny_wan_model_dir, "wan-distilled", device="cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(90, 60, 3), dtype=np.uint8))


def play(stream, trajectory):
    """The stream's chunks along `trajectory`, each stepped when asked for."""
    count = stream.chunk_latents
    intrinsics = trajectory.normalized_K()
    for start in range(0, trajectory.num_latents, count):
        part = slice(start, start + count)
        yield stream.step(trajectory.c2w[part], intrinsics[part], trajectory.actions[part], PROMPT)


@pytest.mark.parametrize(("mode", "pose"), [("t2v", "w-11, right-12"), ("i2v", "w-3, right-4")])
def test_a_wan_stream_fed_chunk_by_chunk_is_the_batch_rollout(pipeline, image, mode, pose):
    """Same latents, contexts and frames, bit for bit, as `generate` over the whole trajectory with the
    stream's noise; t2v runs 6 chunks, so the last goes through the FOV memory selection."""
    from worker.pipeline.families import open_stream
    from worker.pipeline.wan_stream import WanStream

    image = image if mode == "i2v" else None
    trajectory = parse_pose_string(pose)
    stream = open_stream(pipeline, image, OPTIONS)
    assert isinstance(stream, WanStream) and (stream.steps, stream.guidance_scale) == (4, 1.0)
    chunks = list(play(stream, trajectory))

    replay = open_stream(pipeline, image, OPTIONS)
    noise = torch.cat([replay.next_noise() for _ in chunks], dim=2)
    whole: list[np.ndarray] = []
    result = pipeline.generate(
        PROMPT, image, trajectory, "unused.mp4", OPTIONS, noise=noise, write_video=lambda f, *_, **__: whole.extend(f)
    )
    assert torch.equal(torch.cat([chunk.result.latents for chunk in chunks], dim=2), result.latents)
    assert [chunk.result.context for chunk in chunks] == [record.context for record in result.chunks]
    streamed = np.concatenate([chunk.frames for chunk in chunks])
    assert streamed.shape == (trajectory.num_frames, 32, 32, 3)
    assert np.array_equal(streamed, np.stack(whole))
    assert [len(chunk.frames) for chunk in chunks] == [13] + [16] * (len(chunks) - 1)
    assert [chunk.encode_s > 0 for chunk in chunks] == [True] + [False] * (len(chunks) - 1)
    if mode == "t2v":
        # every earlier latent up to 16; the chunk at 20: the 12 most recent latents plus one earlier clip
        assert [len(chunk.result.context) for chunk in chunks] == [0, 4, 8, 12, 16, 16]
        clip, recent = chunks[5].result.context[:4], chunks[5].result.context[4:]
        assert recent == list(range(8, 20)) and clip in ([0, 1, 2, 3], [4, 5, 6, 7])


def test_a_wan_stream_refuses_guidance_a_window_and_a_wrong_chunk(pipeline):
    from worker.models.transformer import AttentionWindow
    from worker.pipeline.wan_stream import WanStream

    with pytest.raises(GenerationError, match="without classifier-free guidance"):
        WanStream(pipeline, None, GenerationOptions(width=32, height=32, guidance=4.0))
    with pytest.raises(GenerationError, match="keeps no attention window"):
        WanStream(pipeline, None, GenerationOptions(width=32, height=32, attention_window=AttentionWindow(4, 12)))
    stream = WanStream(pipeline, None, OPTIONS)
    with pytest.raises(GenerationError, match="a chunk has 4 latents"):
        stream.step(np.eye(4)[None].repeat(3, 0), np.eye(3)[None].repeat(3, 0), np.zeros(3), PROMPT)


@pytest.mark.slow  # a real worker's resident rank loads the tiny WAN model
def test_wan_sessions_text_and_image_to_video_play_on_a_real_worker_and_record_their_videos(
    worldplay_env, redis_conn, start_worker, tiny_wan_model_dir, tmp_path, monkeypatch
):
    """A text-to-video session of three chunks, then an image-to-video one on the weights it loaded."""
    from play_util import dot_image, start_session
    from worker.video import read_video_info
    from worldplay_cli.contract.play import Chunk, End, Ended
    from worldplay_cli.contract.settings import load_settings

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_wan_model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker = start_worker("play")
    request = {"engine": "native", "variant": "wan-distilled", "width": 32, "height": 32, "prompt": PROMPT}
    job_id, player = start_session(load_settings(), redis_conn, None, **request)
    ready = player.ready(timeout=120)
    assert (ready.engine, ready.variant, ready.reused_weights) == ("native", "wan-distilled", False), (
        worker.log_path.read_text()[-2000:]
    )
    player.keys(0, "", "w")
    player.keys(1, "w+right")
    player.keys(2, "left")
    chunks = player.wait_for(Chunk, 120, count=3)
    assert [(message.num_frames, message.context) for message, _ in chunks] == [
        (13, []),
        (16, [0, 1, 2, 3]),
        (16, list(range(8))),
    ]
    assert all(Image.open(io.BytesIO(frame)).size == (32, 32) for _, frames in chunks for frame in frames)
    player.channel.send(End())
    ended = player.wait_for(Ended, 60)[0][0]
    assert (ended.reason, ended.chunks, ended.frames) == ("quit", 3, 45)
    directory = Path(ended.output_dir)
    assert directory.name == job_id and read_video_info(directory / "video.mp4")[:3] == (45, 32, 32)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["spec"]["image"] is None and not any(path.suffix == ".png" for path in directory.iterdir())
    assert (manifest["engine"]["variant"], manifest["engine"]["steps"]) == ("wan-distilled", 4)
    timeline = json.loads((directory / "timeline.json").read_text())
    assert [chunk["actions"] for chunk in timeline["chunks"]] == [message.actions for message, _ in chunks]
    assert chunks[0][0].actions[0] == 0 and len(set(chunks[1][0].actions + chunks[2][0].actions)) == 2
    assert (directory / "trajectory.json").is_file()

    job_id, player = start_session(load_settings(), redis_conn, dot_image(tmp_path / "dot.png"), **request)
    assert player.ready(timeout=120).reused_weights
    player.keys(0, "", "s")
    chunk, frames = player.wait_for(Chunk, 120)[0]
    assert (chunk.num_frames, len(frames)) == (13, 13)
    player.channel.send(End())
    ended = player.wait_for(Ended, 60)[0][0]
    assert (ended.reason, ended.frames) == ("quit", 13)
    assert json.loads((Path(ended.output_dir) / "manifest.json").read_text())["spec"]["image"] is not None


def test_a_wan_session_takes_the_familys_size_refuses_one_it_cannot_make_and_needs_no_image(worldplay_env, tmp_path):
    from play_util import dot_image
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.submit import PlayRequest, prepare_play

    request = PlayRequest(prompt=PROMPT, image=dot_image(tmp_path / "dot.png"), engine="native", variant="wan-ar")
    spec, image = prepare_play(request, load_settings())
    assert (spec.width, spec.height, spec.steps, spec.guidance) == (1280, 704, 50, 1.0) and spec.image and image
    request.width, request.height = 48, 32
    with pytest.raises(BadInput, match="multiples of 32, got 48x32"):
        prepare_play(request, load_settings())
    # no image: text-to-video on the native engine; the preview engine and the HunyuanVideo family take the
    # bundled example
    text_only, image = prepare_play(PlayRequest(prompt=PROMPT, engine="native", variant="wan-ar"), load_settings())
    assert text_only.image is None and image is None
    for engine, variant in (("preview", "wan-ar"), ("native", "ar-distilled")):
        spec, image = prepare_play(PlayRequest(prompt=PROMPT, engine=engine, variant=variant), load_settings())
        assert spec.image is not None and image
    with pytest.raises(ValueError, match="needs a reference image"):
        text_only.model_validate({**text_only.model_dump(), "variant": "ar-distilled", "width": 64, "height": 32})


def test_a_wan_stream_keeps_its_latents_and_cameras_and_nothing_else_grows(pipeline):
    """Live tensor bytes of the whole process between chunk 5 and chunk 20: exactly the latent buffer's growth
    (capacity doubles: 32 -> 128 latents) and 60 latents' cameras; no K/V outlives its chunk."""
    from worker.pipeline.stream import live_tensor_bytes
    from worker.pipeline.wan_stream import WanStream

    stream = WanStream(pipeline, None, OPTIONS)
    measured = {}
    for index, _ in enumerate(play(stream, parse_pose_string("w-79"))):
        if index + 1 in (5, 20):
            measured[index + 1] = live_tensor_bytes()
    latent_bytes = 4 * np.prod(stream.chunk_shape) // stream.chunk_latents
    camera_bytes = 16 * 4 + 9 * 4 + 8 + 16 * 4  # viewmats, K (fp32), action (int64), w2c for the memory (fp32)
    assert measured[20] - measured[5] == (128 - 32) * latent_bytes + 60 * camera_bytes


@pytest.mark.slow  # two workers' resident groups load the tiny WAN model, one of them on two ranks
def test_a_wan_session_on_a_two_gpu_worker_runs_sequence_parallel_and_plays_what_one_rank_plays(
    worldplay_env, redis_conn, start_worker, tiny_wan_model_dir, monkeypatch
):
    from play_util import start_session
    from worker.runtime.client import log_dir
    from worldplay_cli.contract.play import Chunk, End, Ended
    from worldplay_cli.contract.settings import load_settings

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_wan_model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # 64x32 frames: 2x4 latents, 2 tokens per latent, one on each rank
    request = {"engine": "native", "variant": "wan-distilled", "width": 64, "height": 32, "prompt": PROMPT}
    played = []
    for gpus in ("", "0,1"):  # a CPU worker, then one given two GPUs (CPU ranks over gloo here)
        worker = start_worker("play", env={"CUDA_VISIBLE_DEVICES": gpus})
        _, player = start_session(load_settings(), redis_conn, None, **request)
        player.ready(timeout=120)
        player.keys(0, "", "w")
        player.keys(1, "right")
        frames = [frame for _, chunk_frames in player.wait_for(Chunk, 120, count=2) for frame in chunk_frames]
        player.channel.send(End())
        ended = player.wait_for(Ended, 60)[0][0]
        assert ended.frames == 29
        started = [
            line for line in (log_dir(worker.pid) / "supervisor.log").read_text().splitlines() if "started" in line
        ]
        played.append((started, frames))
        worker.terminate()
        worker.wait(60)
    assert ["group 1 started: 1 rank(s)" in line for line in played[0][0]] == [True]
    assert ["group 1 started: 2 rank(s)" in line for line in played[1][0]] == [True]
    one, two = ([np.asarray(Image.open(io.BytesIO(frame)), dtype=int) for frame in frames] for _, frames in played)
    assert len(one) == len(two) == 29
    # the ranks only move tokens and heads between them (within 1e-5 of one process: tests/test_wan_parallel.py)
    assert max(np.abs(a - b).max() for a, b in zip(one, two)) <= 2
