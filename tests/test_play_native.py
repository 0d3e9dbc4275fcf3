"""The native engine's live-play chunk source: the open-ended AR stream against the whole-video rollout,
its bounded memory, and `NativeSource` served by a real resident runtime (supervisor + rank subprocesses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trajectories import parse_pose_string
from worker.pipeline.pipeline import GenerationError, GenerationOptions
from worker.pipeline.stream import ARStream, live_tensor_bytes

pytestmark = pytest.mark.slow  # the tiny model's pipeline and rank groups: seconds to a minute a test

PROMPT = "a lantern-lit alley"
WIDTH, HEIGHT = 16, 32  # 1 x 2 latents: every code path, little compute
# 28 latents: chunk 6 (latents 24..27) is the first whose memory goes through the overlap selection
LONG_POSE = "w-7, right-8, left-8, s-4"


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
def test_a_stream_fed_a_trajectory_chunk_by_chunk_is_the_whole_video_rollout(tiny_pipelines, image, variant, options):
    """Same latents and frames, bit for bit, as `generate` over the whole trajectory with the stream's noise."""
    pipeline = tiny_pipelines(variant)
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


def test_a_prompt_change_encodes_once_and_conditions_the_following_chunks(tiny_pipelines, image):
    pipeline = tiny_pipelines("ar-distilled")
    pipeline.conditioning_cache.clear()  # what earlier tests encoded
    options = GenerationOptions(width=WIDTH, height=HEIGHT)
    trajectory = parse_pose_string("w-7, right-8")
    changed = play_trajectory(ARStream(pipeline, image, options), trajectory, {2: "a snowy field", 3: PROMPT})
    steady = play_trajectory(ARStream(pipeline, image, options), trajectory)
    encoded = [chunk.encode_s > 0 for chunk in changed]
    # chunk 0 encodes the first prompt, chunk 2 the new one; going back to the first encodes nothing
    assert encoded == [True, False, True, False]
    assert torch.equal(changed[1].result.latents, steady[1].result.latents)
    assert not torch.equal(changed[2].result.latents, steady[2].result.latents)


def test_a_stream_refuses_a_bidirectional_variant_and_a_wrong_chunk(tiny_pipelines, image):
    with pytest.raises(GenerationError, match="bidirectional"):
        ARStream(tiny_pipelines("bi"), image, GenerationOptions(width=WIDTH, height=HEIGHT))
    stream = ARStream(tiny_pipelines("ar-distilled"), image, GenerationOptions(width=WIDTH, height=HEIGHT))
    with pytest.raises(GenerationError, match="a chunk has 4 latents"):
        stream.step(np.eye(4)[None].repeat(3, 0), np.eye(3)[None].repeat(3, 0), np.zeros(3), PROMPT)


def test_a_hundred_chunk_session_holds_no_more_than_its_latents_and_cameras_beyond_ten(tiny_pipelines, image):
    """Live tensor bytes of the whole process (weights, caches, the stream) after 100 chunks are ≤ 1.1× those
    after 10, and what grew is exactly the 90 chunks' latents and cameras."""
    pipeline = tiny_pipelines("ar-distilled")
    stream = ARStream(pipeline, image, GenerationOptions(width=WIDTH, height=HEIGHT))
    count = stream.chunk_latents
    c2w = np.repeat(np.eye(4)[None], count, 0)
    intrinsics = np.repeat(np.array([[[0.5, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1]]]), count, 0)
    prompts = ["a quiet street", "a snowy field", "a lantern-lit alley", "a beach", "a forest", "a harbour"]
    measured = {}
    for index in range(100):
        c2w = c2w.copy()
        c2w[:, 2, 3] += 0.1 * np.arange(1, count + 1)  # forward
        # a new prompt every chunk, more than the conditioning cache holds: it evicts, re-encodes, stays bounded
        stream.step(c2w, intrinsics, np.full(count, 1), prompts[index % len(prompts)])
        if index + 1 in (10, 100):
            measured[index + 1] = live_tensor_bytes()
    latent_bytes = 4 * np.prod(stream.chunk_shape)
    camera_bytes = count * (16 * 4 + 9 * 4 + 8 + 16 * 8)  # viewmats, K (fp32), action (int64), w2c (fp64)
    assert measured[100] - measured[10] == 90 * (latent_bytes + camera_bytes)
    assert measured[100] <= 1.1 * measured[10]


# --- NativeSource through a real resident runtime --------------------------------------------------------

# A work horse in its own process: opens a session and waits to be killed.
HORSE = """
import json, sys, time
from pathlib import Path

import numpy as np

from worker.play.native import NativeSource
from worldplay_cli.contract.play import PlaySpec
from worldplay_cli.contract.settings import load_settings

class Reporter:
    settings = load_settings()
    def stage(self, name): pass
    def update(self, *args, **kwargs): pass
    def log(self, line): print(line, flush=True)
    def check_cancel(self): pass

owner, spec, image_path, work_dir, cameras, prompt = sys.argv[1:]
source = NativeSource(owner=int(owner))
source.open(PlaySpec.model_validate_json(spec), Path(image_path), Path(work_dir), Reporter())
source.generate(0, *[np.array(part) for part in json.loads(cameras)], prompt)
(Path(work_dir) / "chunk 0 made").touch()
time.sleep(600)
"""


class LogReporter:
    """What a session's reporter does for a source: settings, log lines, stages, a cancel flag."""

    def __init__(self):
        from worldplay_cli.contract.settings import load_settings

        self.settings = load_settings()
        self.lines: list[str] = []

    def stage(self, name):
        self.lines.append(f"stage: {name}")

    def update(self, *args, **kwargs):
        pass

    def log(self, line):
        self.lines.append(line)

    def check_cancel(self):
        pass


@pytest.fixture
def resident_owner(worldplay_env, tiny_model_dir, monkeypatch):
    """A stand-in for the rq worker process that owns the resident runtime: the supervisor the sources
    start serves it and stops, with its ranks, when it ends."""
    import subprocess
    import sys

    from spine_util import alive, wait_until
    from worker.runtime.client import log_dir, socket_path

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    yield owner.pid
    ranks = log_dir(owner.pid) / "group.txt"
    pids = [int(pid) for pid in ranks.read_text().split()] if ranks.exists() else []
    owner.kill()
    owner.wait()
    wait_until(lambda: not socket_path(owner.pid).exists(), 30, what="the supervisor to stop with its owner")
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, what="the ranks to stop with the supervisor")


def play_spec(image_path, **fields):
    import hashlib

    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.specs import ImageRef

    digest = hashlib.sha256(image_path.read_bytes()).hexdigest()
    values = {
        "prompt": PROMPT,
        "image": ImageRef(source=str(image_path), sha256=digest, width=60, height=90),
        "engine": "native",
        "variant": "ar-distilled",
        "steps": 4,
        "guidance": 1.0,
        "width": WIDTH,
        "height": HEIGHT,
        "seed": 3,
        "timeout_s": 600,
    }
    return PlaySpec(**{**values, **fields})


def walk(chunk: int, count: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cameras of chunk `chunk` of a walk forward (latent 0 at the identity), normalised K, action 'w'."""
    c2w = np.repeat(np.eye(4)[None], count, 0)
    c2w[:, 2, 3] = 0.25 * np.arange(chunk * count, (chunk + 1) * count)
    intrinsics = np.repeat(np.array([[[0.6, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]]), count, 0)
    actions = np.full(count, 1 if chunk else 0)
    if chunk == 0:
        actions[1:] = 1
    return c2w, intrinsics, actions


def test_native_source_plays_on_the_resident_group_reuses_its_weights_survives_a_vanished_horse_and_runs_sp(
    resident_owner, tiny_pipelines, image, tmp_path
):
    import json
    import signal
    import subprocess
    import sys

    from spine_util import wait_until
    from worker.play.native import NativeSource
    from worker.runtime.client import log_dir

    image_path = tmp_path / "input.png"
    image.save(image_path)
    spec = play_spec(image_path)
    prompts = [PROMPT, PROMPT, "a snowy field"]

    # 1. a first session loads the weights; three chunks, the last one with another prompt
    work_dir = tmp_path / "first"
    work_dir.mkdir()
    source, reporter = NativeSource(owner=resident_owner), LogReporter()
    info = source.open(spec, image_path, work_dir, reporter)
    assert (info.reused_weights, info.info["variant"], info.info["steps"]) == (False, "ar-distilled", 4)
    made = [source.generate(chunk, *walk(chunk), prompts[chunk]) for chunk in range(3)]
    source.close()
    assert [chunk.frames.shape for chunk in made] == [(13, HEIGHT, WIDTH, 3)] + [(16, HEIGHT, WIDTH, 3)] * 2
    assert [chunk.context for chunk in made] == [[], [0, 1, 2, 3], list(range(8))]
    assert list(work_dir.iterdir()) == []  # each chunk's frames file is read and removed

    # the ranks played what a stream in this process plays from the same seed, cameras and prompts
    local = ARStream(tiny_pipelines("ar-distilled"), image, GenerationOptions(width=WIDTH, height=HEIGHT, seed=3))
    expected = [local.step(*walk(chunk), prompts[chunk]).frames for chunk in range(3)]
    assert all(np.array_equal(chunk.frames, frames) for chunk, frames in zip(made, expected))

    # 2. a horse that vanishes mid-session (killed): the supervisor cancels the session, the ranks stay
    horse_dir = tmp_path / "horse"
    horse_dir.mkdir()
    cameras = json.dumps([part.tolist() for part in walk(0)])
    with open(tmp_path / "horse.log", "w") as log:
        horse = subprocess.Popen(
            [sys.executable, "-c", HORSE, str(resident_owner), spec.model_dump_json(), str(image_path),
             str(horse_dir), cameras, PROMPT],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    made_first = horse_dir / "chunk 0 made"
    wait_until(lambda: made_first.exists() or horse.poll() is not None, 120, what="the horse's first chunk")
    assert made_first.exists(), (tmp_path / "horse.log").read_text()
    horse.send_signal(signal.SIGKILL)
    horse.wait()

    # 3. the next session starts on the same loaded weights
    work_dir = tmp_path / "second"
    work_dir.mkdir()
    source = NativeSource(owner=resident_owner)
    info = source.open(spec.model_copy(update={"seed": 4}), image_path, work_dir, LogReporter())
    assert info.reused_weights and info.load_s == 0.0
    assert source.generate(0, *walk(0), PROMPT).frames.shape == (13, HEIGHT, WIDTH, 3)
    source.close()
    supervisor_log = (log_dir(resident_owner) / "supervisor.log").read_text()
    assert "the job's work horse went away; canceling the job" in supervisor_log
    assert len([line for line in supervisor_log.splitlines() if "of this worker:" in line]) == 1
    assert supervisor_log.count("group 1 started") == 1 and "group 2 started" not in supervisor_log

    # 4. a session over two ranks (a worker with two GPUs): sequence parallel plays the same frames
    work_dir = tmp_path / "two-ranks"
    work_dir.mkdir()
    source = NativeSource(owner=resident_owner, ranks=2)
    source.open(spec, image_path, work_dir, LogReporter())
    made = [source.generate(chunk, *walk(chunk), prompts[chunk]) for chunk in range(3)]
    source.close()
    assert all(np.array_equal(chunk.frames, frames) for chunk, frames in zip(made, expected))
    assert "group 2 started: 2 rank(s)" in (log_dir(resident_owner) / "supervisor.log").read_text()


def test_a_native_session_on_a_worker_shares_the_resident_weights_with_generation_jobs_and_a_cancel_frees_them(
    worldplay_env, redis_conn, start_worker, tiny_model_dir, tmp_path, cli, monkeypatch
):
    """A real worker on one queue: a generation loads the weights, a session plays on them and is canceled
    mid-play, the next generation still finds them loaded in the same rank group."""
    import json
    from pathlib import Path

    from play_util import dot_image, start_session
    from spine_util import wait_until
    from worldplay_cli.contract.play import Chunk, Ended
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.contract.settings import load_settings

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    outputs = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    worker = start_worker("play")

    def generate(seed: str) -> dict:
        code, out, err = cli("generate", "--queue-name", "play", "--engine", "native", "--variant", "ar-distilled",
                             "--pose", "w-3", "--width", "32", "--height", "16", "--prompt", PROMPT, "--seed", seed)  # fmt: skip
        assert code == 0, err
        job_id = out.strip()
        status = wait_until(
            lambda: (s := fetch_job(redis_conn, job_id).get_status().value) in ("finished", "failed") and s,
            180,
            what=f"generation {job_id}",
        )
        assert status == "finished", worker.log_path.read_text()[-2000:]
        return json.loads((outputs / job_id / "manifest.json").read_text())["engine"]["resident"]

    assert generate("1")["reused_weights"] is False
    job_id, player = start_session(
        load_settings(), redis_conn, dot_image(tmp_path / "dot.png"), engine="native", variant="ar-distilled",
        width=32, height=16,
    )  # fmt: skip
    ready = player.ready(timeout=120)
    assert (ready.engine, ready.reused_weights, ready.load_s) == ("native", True, 0.0)
    player.keys(0, "", "w")
    player.keys(1, "w+right")
    chunks = player.wait_for(Chunk, 120, count=2)
    assert [(message.num_frames, message.context) for message, _ in chunks] == [(13, []), (16, [0, 1, 2, 3])]
    assert [len(frames) for _, frames in chunks] == [13, 16]

    code, _, err = cli("jobs", "cancel", job_id)
    assert code == 0, err
    ended = player.wait_for(Ended, 60)[0][0]
    assert (ended.reason, ended.chunks, ended.frames) == ("canceled", 2, 29)  # every chunk shown is kept
    after = generate("2")
    assert (after["reused_weights"], after["group"], after["loads_in_worker"]) == (True, 1, 1)
