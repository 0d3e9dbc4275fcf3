"""Live sessions on the worker side (#19): keys -> poses -> actions, and a real session played over Redis
with a real worker subprocess and the preview source, driving the `PlayChannel` as a player would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from play_util import dot_image, dot_position, start_session
from spine_util import wait_until
from trajectories.actions import action_name, compute_actions
from trajectories.errors import TrajectoryError
from trajectories.poses import keys_motion, motions_to_c2w
from worldplay_cli.contract.play import SEGMENTS_DIR, Chunk, End, Ended, Marker, PlayManifest, SetPrompt, Timeline

# --- keys -> poses -> actions (trajectories, numpy only) --------------------------------------------------


@pytest.mark.parametrize(
    "keys, name",
    [
        (["w"], "W"),
        (["w", "right"], "W+→"),
        (["s", "a", "up"], "S+A+↑"),
        (["d", "left", "down"], "D+←+↓"),
        (["w", "s"], "—"),  # opposite keys cancel
        (["a", "d", "left", "right", "up"], "↑"),
        ([], "—"),
    ],
)
def test_held_keys_give_the_official_action_class(keys, name):
    c2w = motions_to_c2w([keys_motion(keys)] * 3)
    actions = compute_actions(c2w)
    assert actions[0] == 0  # latent 0 is the identity, always no action
    assert [action_name(action) for action in actions[1:]] == [name] * 3


def test_keys_use_the_grammar_default_steps():
    from trajectories.model import parse_pose_string

    c2w = motions_to_c2w([keys_motion(["w", "right"])] * 2 + [keys_motion(["a", "up"])] * 3)
    assert np.array_equal(c2w, parse_pose_string("w+right-2, a+up-3").c2w)


def test_a_path_extended_chunk_by_chunk_is_the_path_made_at_once():
    motions = [keys_motion(["w", "right"])] * 4 + [keys_motion(["s", "down"])] * 4
    first = motions_to_c2w(motions[:4])
    rest = motions_to_c2w(motions[4:], start=first[-1])
    assert np.array_equal(np.concatenate([first, rest[1:]]), motions_to_c2w(motions))


def test_unknown_keys_are_refused():
    with pytest.raises(TrajectoryError, match="unknown key 'jump'"):
        keys_motion(["w", "jump"])
    with pytest.raises(TrajectoryError, match="unknown key 'hold'"):
        keys_motion(["hold"])


def test_the_preview_source_chunk_by_chunk_is_the_preview_of_the_whole_played_path(tmp_path):
    """Bit for bit what `trajectories.render.preview_frames` (the preview engine, without its HUD) renders
    for the path the chunks add up to: the frames between chunks start from the previous chunk's last pose."""
    from PIL import Image

    from trajectories import DEFAULT_K, Trajectory
    from trajectories.render import normalize_intrinsics, preview_frames
    from worker.play.preview import PreviewSource
    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.specs import ImageRef

    image_path = dot_image(tmp_path / "dot.png")
    spec = PlaySpec(
        prompt="",
        image=ImageRef(source="dot.png", sha256="0", width=192, height=96),
        engine="preview",
        variant="ar-distilled",
        steps=4,
        guidance=1.0,
        width=96,
        height=48,
        timeout_s=60,
    )
    held = [["w"], ["w"], ["w"], ["right", "up"], ["right"], ["left", "a"], ["d"], ["s", "down"], ["w"], ["w"], []]
    c2w = motions_to_c2w([keys_motion(keys) for keys in held])
    intrinsics = np.repeat(normalize_intrinsics(DEFAULT_K)[None], 4, axis=0)
    source = PreviewSource()
    source.open(spec, image_path, tmp_path, reporter=None)
    chunks = [
        source.generate(
            chunk, c2w[4 * chunk : 4 * chunk + 4], intrinsics, compute_actions(c2w)[4 * chunk : 4 * chunk + 4], ""
        )
        for chunk in range(3)
    ]
    source.close()
    assert [len(chunk.frames) for chunk in chunks] == [13, 16, 16]
    image = np.asarray(Image.open(image_path).convert("RGB"))
    whole = np.stack(list(preview_frames(image, Trajectory(c2w, DEFAULT_K), 96, 48, hud=False)))
    assert np.array_equal(np.concatenate([chunk.frames for chunk in chunks]), whole)


# --- a real session --------------------------------------------------------------------------------------


@pytest.fixture
def session_world(worldplay_env, redis_conn, start_worker, tmp_path):
    from worldplay_cli.contract.settings import load_settings

    worker = start_worker("play")
    return load_settings(), redis_conn, worker, dot_image(tmp_path / "dot.png")


def test_keys_change_the_next_chunk_and_quit_keeps_everything(session_world, cli):
    from trajectories import load_trajectory
    from worker.video import read_video_frames

    settings, conn, _worker, image = session_world
    job_id, player = start_session(settings, conn, image)
    ready = player.ready()
    assert (ready.engine, ready.chunk_latents, ready.width, ready.height) == ("preview", 4, 96, 48)

    player.keys(0, "", "w")  # walk forward
    player.keys(1, "right")  # turn right
    first, second = (message for message, _ in player.wait_for(Chunk, count=2))
    assert [action_name(action) for action in first.actions] == ["—", "W", "W", "W"]
    assert first.keys == [[], ["w"], ["w"], ["w"]] and first.num_frames == 13 and first.first_frame == 0
    assert [action_name(action) for action in second.actions] == ["→"] * 4
    assert second.num_frames == 16 and second.first_frame == 13

    # The frames move as the keys say: forward pushes the off-centre dot outward, a right turn moves it left.
    (_, frames_0), (_, frames_1) = player.chunks()[:2]
    start_x, start_y = dot_position(frames_0[0])
    walked_x, walked_y = dot_position(frames_0[-1])
    assert walked_x > start_x + 1 and walked_y < start_y - 0.5, (start_x, start_y, walked_x, walked_y)
    turned_x, turned_y = dot_position(frames_1[-1])
    assert turned_x < walked_x - 3 and abs(turned_y - walked_y) < 2, (walked_x, walked_y, turned_x, turned_y)

    # The prompt changes from the next chunk started; markers land on it.
    player.channel.send(SetPrompt(text="a snowy street"))
    player.channel.send(Marker(label="here"))
    player.keys(2, "s+a+up")
    third = player.wait_for(Chunk, count=3)[2][0]
    assert third.prompt == "a snowy street" and first.prompt == second.prompt == "a quiet street"
    assert [action_name(action) for action in third.actions] == ["S+A+↑"] * 4

    player.channel.send(End())
    ended = player.wait_for(Ended)[0][0]
    directory = settings.output_root / job_id
    assert (ended.reason, ended.chunks, ended.frames, ended.output_dir) == ("quit", 3, 13 + 16 * 2, str(directory))

    # Everything played is kept: the video of exactly the frames shown, the path, the timeline, the manifest.
    video = read_video_frames(directory / "video.mp4")
    assert video.shape == (45, 48, 96, 3)
    assert sorted(path.name for path in (directory / SEGMENTS_DIR).iterdir()) == [
        "chunk-00000.mp4",
        "chunk-00001.mp4",
        "chunk-00002.mp4",
    ]
    timeline = Timeline.model_validate_json((directory / "timeline.json").read_text())
    assert [chunk.actions for chunk in timeline.chunks] == [first.actions, second.actions, third.actions]
    assert [(change.text, change.from_chunk) for change in timeline.prompts] == [
        ("a quiet street", 0),
        ("a snowy street", 2),
    ]
    assert timeline.chunks[2].markers == ["here"] and timeline.chunks[2].prompt_index == 1
    trajectory = load_trajectory(directory / "trajectory.json")
    assert trajectory.num_latents == 12 and trajectory.num_frames == 45
    assert trajectory.actions.tolist() == first.actions + second.actions + third.actions
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert manifest.status == "finished" and manifest.video.frames == 45
    assert (manifest.play.reason, manifest.play.chunks, manifest.play.frames) == ("quit", 3, 45)
    assert wait_until(lambda: not player.channel.worker_alive(), 5, what="the liveness key released")

    # The played path re-renders as a generation (AR variants need multiples of 4 latents: it has 12).
    pose = str(directory / "trajectory.json")
    code, out, err = cli("traj", "show", pose, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["num_latents"], shown["num_frames"], shown["valid"]["ar-distilled"]) == (12, 45, True)
    code, out, err = cli("generate", "--pose", pose, "--variant", "ar-distilled", "--dry-run", "--json")
    assert code == 0, err
    spec = json.loads(out)
    assert (spec["frames"], spec["trajectory"]["num_latents"], spec["variant"]) == (45, 12, "ar-distilled")


def test_a_worker_on_another_host_needs_only_the_redis(worldplay_env, redis_conn, start_worker, tmp_path):
    """The worker's output root is not the player's: it takes the image from Redis, plays, and keeps the
    outputs under its own root (where `Ended` says)."""
    from worldplay_cli.contract.settings import load_settings

    worker_root = tmp_path / "gpu-host-outputs"
    start_worker("play", env={"WORLDPLAY_OUTPUT_ROOT": str(worker_root)})
    settings = load_settings()
    job_id, player = start_session(settings, redis_conn, dot_image(tmp_path / "dot.png"))
    player.ready()
    player.keys(0, "w")
    player.wait_for(Chunk)
    player.channel.send(End())
    ended = player.wait_for(Ended)[0][0]
    assert ended.output_dir == str(worker_root / job_id) and ended.frames == 13
    assert (worker_root / job_id / "video.mp4").is_file() and (worker_root / job_id / "input.png").is_file()
    assert not (settings.output_root / job_id / "video.mp4").exists()  # the player's copy holds the inputs only


def test_a_running_session_is_listed_with_its_chunks_and_latency(session_world, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # wide enough for the engine column
    settings, conn, _worker, image = session_world
    job_id, player = start_session(settings, conn, image)
    player.ready()
    player.keys(0, "", "w")
    player.keys(1, "left")
    player.wait_for(Chunk, count=2)

    def listed():
        code, out, err = cli("jobs", "list", "--json")
        assert code == 0, err
        row = json.loads(out)["jobs"][0]
        return row if (row.get("play") or {}).get("chunks") == 2 else None

    row = wait_until(listed, 5, what="the session's figures in the listing")
    assert (row["id"], row["status"], row["kind"], row["engine"], row["frames"]) == (
        job_id,
        "started",
        "play",
        "preview",
        29,
    )
    assert row["play"]["latency_s"] >= 0 and row["play"]["generate_s"] > 0
    code, out, _ = cli("jobs", "list")
    assert "play preview/ar-distilled" in out and "2 chunks, 29 frames, latency" in out
    code, out, _ = cli("jobs", "show", job_id)
    assert "play preview/ar-distilled, 96x48, 4 steps, seed 1, up to 1000 chunks" in out
    assert "played: 2 chunks, 29 frames" in out
    player.channel.send(End())
    assert player.wait_for(Ended)[0][0].reason == "quit"


@pytest.mark.slow  # the resident rank group loads the tiny model (~30 s on a shared CPU)
def test_a_native_session_on_the_tiny_model_plays_and_keeps_its_chunks(
    worldplay_env, redis_conn, start_worker, tiny_model_dir, tmp_path, monkeypatch
):
    from worker.video import read_video_info
    from worldplay_cli.contract.settings import load_settings

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_model_dir))
    start_worker("play")
    settings = load_settings()
    image = dot_image(tmp_path / "dot.png")
    job_id, player = start_session(settings, redis_conn, image, engine="native", width=16, height=32)
    ready = player.ready(timeout=120)
    assert (ready.engine, ready.variant, ready.chunk_latents) == ("native", "ar-distilled", 4)
    player.keys(0, "", "w")
    player.keys(1, "w+left")
    first, second = (message for message, _ in player.wait_for(Chunk, count=2, timeout=120))
    assert [action_name(action) for action in second.actions] == ["W+←"] * 4
    assert (first.num_frames, second.num_frames) == (13, 16)
    player.channel.send(End())
    ended = player.wait_for(Ended, timeout=60)[0][0]
    assert (ended.reason, ended.chunks, ended.frames) == ("quit", 2, 29)
    assert read_video_info(settings.output_root / job_id / "video.mp4")[:3] == (29, 16, 32)


def test_the_dashboard_shows_what_a_live_session_played():
    from worldplay_cli.rows import JobRow
    from worldplay_cli.tui.dashboard.widgets import progress_text

    row = JobRow(id="s", status="started", kind="play", play={"chunks": 3, "frames": 45, "latency_s": 0.31})
    assert progress_text(row).plain == "3 chunks, 45 frames, latency 0.31 s"
    assert progress_text(JobRow(id="s", status="started", kind="play")).plain == "loading"
