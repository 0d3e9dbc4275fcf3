"""Live sessions under faults (#19), with a real Redis and real worker subprocesses: the player vanishes, the
worker is killed, the player sends garbage, the user cancels, the disk fails, the session runs out of chunks.
A session never holds a worker without a client, and every complete chunk is kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from play_util import Player, dot_image, start_session
from spine_util import alive, wait_until
from worker.play.session import DEFER_SEGMENTS_ENV
from worldplay_cli.contract.play import (
    SEGMENTS_DIR,
    WORKER_ALIVE_TTL_S,
    Chunk,
    End,
    Ended,
    Failed,
    Keys,
    PlayManifest,
    Ready,
    Timeline,
    input_key,
)


@pytest.fixture
def world(worldplay_env, redis_conn, start_worker, tmp_path):
    from worldplay_cli.contract.settings import load_settings

    return load_settings(), redis_conn, start_worker, dot_image(tmp_path / "dot.png")


def _job_status(conn, job_id: str) -> str:
    from worldplay_cli.contract.queue import fetch_job

    return fetch_job(conn, job_id).get_status(refresh=True).value


def _play_chunks(player: Player, count: int) -> None:
    for chunk in range(count):
        player.keys(chunk, "w+right")
    player.wait_for(Chunk, count=count)


def test_a_vanished_player_ends_the_session_after_the_idle_timeout_and_the_worker_serves_the_next(world):
    from worker.video import read_video_info

    settings, conn, start_worker, image = world
    start_worker("play")
    job_id, player = start_session(settings, conn, image, idle_timeout_s=2.0)
    player.ready()
    _play_chunks(player, 2)
    # The player is gone: it sends nothing more.
    ended = player.wait_for(Ended, timeout=15)[0][0]
    assert (ended.reason, ended.chunks, ended.frames) == ("idle", 2, 29)
    directory = settings.output_root / job_id
    assert read_video_info(directory / "video.mp4")[0] == 29
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert (manifest.status, manifest.play.reason) == ("finished", "idle")
    assert wait_until(lambda: _job_status(conn, job_id) == "finished", 10, what="the session's job finished")

    # The same worker serves the next session.
    _next_id, next_player = start_session(settings, conn, image)
    assert next_player.ready(timeout=15).engine == "preview"


def test_a_killed_worker_lets_the_liveness_key_expire_and_leaves_every_published_chunk(world):
    from trajectories import load_trajectory
    from worker.video import read_video_info

    settings, conn, start_worker, image = world
    # A worker that makes no segment while a session plays: the session is killed with none made.
    worker = start_worker("play", env={DEFER_SEGMENTS_ENV: "1"})
    job_id, player = start_session(settings, conn, image)
    player.ready()
    _play_chunks(player, 3)
    directory = settings.output_root / job_id
    # Killed right after the third chunk was published: a chunk is kept before it is published.
    horses = psutil.Process(worker.pid).children()
    for process in [worker, *horses]:
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)
    worker.wait()
    wait_until(lambda: not any(alive(horse.pid) for horse in horses), 10, what="the work horse gone")

    assert wait_until(
        lambda: not player.channel.worker_alive(), WORKER_ALIVE_TTL_S + 2, what="the liveness key expired"
    )
    timeline = _timeline(directory)
    assert [chunk.num_frames for chunk in timeline.chunks] == [13, 16, 16]
    assert not (directory / "video.mp4").exists()  # nobody could make it
    assert _kept(directory) == {"chunk-00000": 13, "chunk-00001": 16, "chunk-00002": 16}  # JPEGs, no segment
    joined = subprocess.run([sys.executable, "-m", "worker.play", str(directory)], capture_output=True, text=True)
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout) == {"video": str(directory / "video.mp4")}
    assert read_video_info(directory / "video.mp4")[0] == 45
    assert load_trajectory(directory / "trajectory.json").actions.tolist() == sum(
        (chunk.actions for chunk in timeline.chunks), []
    )
    assert _kept(directory) == {f"chunk-0000{chunk}.mp4": 1 for chunk in range(3)}  # the JPEGs became segments
    again = subprocess.run([sys.executable, "-m", "worker.play", str(directory)], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr

    # Another worker's reaper ends the lost session for good (a session is never re-run).
    start_worker("play")
    assert wait_until(lambda: _job_status(conn, job_id) == "failed", 30, what="the lost session failed")


def test_bad_messages_are_skipped_and_the_session_goes_on(world):
    settings, conn, start_worker, image = world
    start_worker("play")
    job_id, player = start_session(settings, conn, image)
    # All sent before the session reads its stream, so its first read sees them all (and both keys of chunk 0).
    stream = input_key(job_id)
    conn.xadd(stream, {"nothing": "here"})  # no message field
    conn.xadd(stream, {"m": "{not json"})
    conn.xadd(stream, {"m": '{"type": "keys", "chunk": 0, "latents": [["jump"]]}'})  # an unknown key
    conn.xadd(stream, {"m": '{"type": "teleport"}'})
    player.channel.send(Keys(chunk=0, latents=[["w"]]))  # one latent, not four
    player.channel.send(Keys(chunk=9, latents=[["w"]] * 4))  # far beyond the ahead window
    player.keys(0, "", "d")
    player.keys(0, "", "a")  # sent again before the chunk started: the last keys count
    player.ready()
    first = player.wait_for(Chunk)[0][0]
    assert first.keys == [[], ["a"], ["a"], ["a"]]
    player.channel.send(Keys(chunk=0, latents=[["w"]] * 4))  # for a chunk already made
    player.keys(1, "w")
    second = player.wait_for(Chunk, count=2)[1][0]
    assert second.chunk == 1 and second.keys == [["w"]] * 4
    player.channel.send(End())
    assert player.wait_for(Ended)[0][0].reason == "quit"
    manifest = PlayManifest.model_validate_json((settings.output_root / job_id / "manifest.json").read_text())
    assert manifest.play.skipped_messages == 7
    log = (settings.output_root / job_id / "log.txt").read_text()
    assert "skipped a message: stream entry without a message field 'm'" in log
    assert "keys for chunk 0, which is already made" in log


@pytest.mark.parametrize("segments", ["made while playing", "deferred"])
def test_a_cancel_mid_session_stops_it_with_every_published_chunk(world, cli, segments):
    """Canceled right after its chunks were published; with segments deferred, none is made when the cancel
    comes (the encoder of a loaded CPU that has not caught up): the end makes them within the kill grace."""
    from worker.video import read_video_info

    settings, conn, start_worker, image = world
    start_worker("play", env={DEFER_SEGMENTS_ENV: "1"} if segments == "deferred" else {})
    job_id, player = start_session(settings, conn, image)
    player.ready()
    _play_chunks(player, 2)
    assert len(_timeline(settings.output_root / job_id).chunks) == 2  # kept before published
    code, _out, err = cli("jobs", "cancel", job_id)
    assert code == 0, err
    ended = player.wait_for(Ended, timeout=15)[0][0]
    assert (ended.reason, ended.chunks, ended.frames) == ("canceled", 2, 29)
    directory = settings.output_root / job_id
    assert read_video_info(directory / "video.mp4")[0] == 29
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert (manifest.status, manifest.failure.kind, manifest.play.reason) == ("stopped", "canceled", "canceled")
    assert _kept(directory) == {"chunk-00000.mp4": 1, "chunk-00001.mp4": 1}
    assert wait_until(lambda: not player.channel.worker_alive(), 5, what="the liveness key released")


def test_a_chunk_that_cannot_be_kept_fails_the_session_with_a_reason_unpublished_and_keeps_the_chunks_before(world):
    from worker.video import read_video_info
    from worldplay_cli.contract.play import chunk_frames_name

    settings, conn, start_worker, image = world
    start_worker("play")
    job_id, player = start_session(settings, conn, image)
    player.ready()
    _play_chunks(player, 1)
    directory = settings.output_root / job_id
    # Something is in the way of the next chunk's frames (the tests run as root: permissions would not stop it).
    (directory / SEGMENTS_DIR / chunk_frames_name(1)).write_text("in the way")
    player.keys(1, "w")
    failed = player.wait_for(Failed, timeout=15)[0][0]
    assert failed.chunks == 1 and failed.output_dir == str(directory)
    assert "refusing to overwrite a chunk's kept frames" in failed.message and failed.hint == "see the job log"
    assert len(player.chunks()) == 1  # a chunk that could not be kept is never shown
    assert read_video_info(directory / "video.mp4")[0] == 13
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert (manifest.status, manifest.play.reason, manifest.play.chunks) == ("failed", "failed", 1)
    assert manifest.failure.kind == "engine_error"
    assert wait_until(lambda: _job_status(conn, job_id) == "failed", 10, what="the job failed")
    assert wait_until(lambda: not player.channel.worker_alive(), 5, what="the liveness key released")


@pytest.mark.parametrize("limit", ["max_chunks", "max_latents"])
def test_a_session_ends_by_itself_after_max_chunks_or_the_longest_trajectory(world, limit):
    settings, conn, start_worker, image = world
    # A worker whose trajectories may have 8 latents: the played path must stay one it accepts.
    start_worker("play", env={"WORLDPLAY_LIMITS__MAX_LATENTS": "8"} if limit == "max_latents" else {})
    job_id, player = start_session(settings, conn, image, max_chunks=2 if limit == "max_chunks" else 1000)
    assert player.ready().chunk_latents == 4
    for chunk in range(3):
        player.keys(chunk, "s")
    ended = player.wait_for(Ended)[0][0]
    assert (ended.reason, ended.chunks) == ("max_chunks", 2)
    assert not [message for message, _ in player.received if isinstance(message, Ready)][1:]


def _kept(directory) -> dict[str, int]:
    """What `segments/` holds: each segment (1), each chunk's JPEG directory (its frame count)."""
    return {
        path.name: len(list(path.glob("*.jpg"))) if path.is_dir() else 1
        for path in (directory / SEGMENTS_DIR).iterdir()
        if not path.name.startswith(".")
    }


def _timeline(directory) -> Timeline:
    path = directory / "timeline.json"
    return (
        Timeline.model_validate_json(path.read_text())
        if path.exists()
        else Timeline(chunk_latents=4, fps=24, prompts=[], chunks=[])
    )


def test_a_stopping_worker_ends_its_session_with_the_outputs_and_the_session_is_never_run_again(world):
    from worker.video import read_video_info
    from worldplay_cli.contract.queue import fetch_job, rq_queue

    settings, conn, start_worker, image = world
    worker = start_worker("play")
    job_id, player = start_session(settings, conn, image)
    player.ready()
    _play_chunks(player, 2)
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the session has shutdown_grace_s (2 s) to end
    failed = player.wait_for(Failed, timeout=20)[0][0]
    assert "the worker ended the session" in failed.message and failed.chunks == 2
    worker.wait(timeout=20)
    directory = settings.output_root / job_id
    assert read_video_info(directory / "video.mp4")[0] == 29
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert (manifest.status, manifest.play.reason, manifest.attempt) == ("failed", "failed", 1)

    # The session ended by itself within the grace, so the job is over, not re-queued: it never runs again.
    assert wait_until(lambda: _job_status(conn, job_id) == "failed", 10, what="the session's job failed")
    assert fetch_job(conn, job_id).get_meta(refresh=True)["failure"]["kind"] == "internal"
    assert rq_queue(conn, "play").count == 0
