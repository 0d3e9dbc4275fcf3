"""The player app against real workers (preview engine): a private worker (no --queue) and a shared one on
the play queue; keys, prompt, quit, replay and a worker killed mid-session, all through Pilot."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from play_util import HEIGHT, WIDTH, dot_image
from trajectories.actions import action_name
from tui_util import settle
from worldplay_cli.contract.play import PlayManifest, Timeline

pytestmark = pytest.mark.slow


@pytest.fixture
def play_world(worldplay_env, tmp_path):
    from worldplay_cli.runtime import Runtime

    return Runtime(), dot_image(tmp_path / "dot.png")


def _request(image, **extra):
    from worldplay_cli.submit import PlayRequest

    return PlayRequest(prompt="a quiet street", image=image, width=WIDTH, height=HEIGHT, **extra)


async def _hold(pilot, app, keys: tuple[str, ...], condition, timeout_s: float = 30.0, what: str = ""):
    """Press `keys` again and again (a key kept down) until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out holding {keys}: {what}"
        await pilot.press(*keys)


async def test_a_private_session_plays_keys_and_prompt_quits_with_its_outputs_and_replays(play_world):
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.client import ReplayClient
    from worldplay_cli.tui.player.launch import start_session

    runtime, image = play_world
    session = start_session(runtime, _request(image), None)
    client = session.client
    # Pilot's press waits for an idle app (never, while playing) up to a second: keep the keys held across it.
    client.sampler.hold_window_s = 3.0
    app = PlayerApp(client, graphics="halfblock", queue=session.queue)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(pilot, lambda: client.frames_shown > 0, timeout_s=60, what="the first frame")
            assert client.ready.engine == "preview"

            def shows(name: str) -> bool:
                return client.current is not None and action_name(client.current.actions) == name

            await _hold(pilot, app, ("w",), lambda: shows("W"), what="a frame walking forward")
            forward_chunk = client.current.chunk
            assert forward_chunk >= 1  # chunk 0 was asked for before any key

            await pilot.press("space")  # let go: the following chunks hold still
            await _hold(pilot, app, ("right",), lambda: shows("→"), what="a frame turning right")

            await pilot.press("p", *"snow", "enter")
            asked_from = client.figures().chunks + client.ahead_chunks  # no chunk past these was asked for yet
            await settle(pilot, lambda: client.current is not None and client.current.prompt == "snow", 30, "snow")
            await pilot.press("q")
            await settle(pilot, lambda: app.return_value is not None, 30, "the session to end")
    finally:
        session.close()
    result = app.return_value
    assert result.status == "ended" and result.reason == "quit"
    directory = runtime.settings.output_root / session.job_id
    assert result.output_dir == str(directory)
    for name in ("video.mp4", "timeline.json", "trajectory.json", "manifest.json"):
        assert (directory / name).is_file(), name
    timeline = Timeline.model_validate_json((directory / "timeline.json").read_text())
    assert [action_name(action) for action in timeline.chunks[forward_chunk].actions].count("W") >= 1
    assert [(change.text, change.from_chunk) for change in timeline.prompts][0] == ("a quiet street", 0)
    (snow,) = [change for change in timeline.prompts if change.text == "snow"]
    # the new prompt starts at a chunk boundary: every chunk before it has the old one, every later one the new
    assert 0 < snow.from_chunk <= asked_from + 1
    indices = [chunk.prompt_index for chunk in timeline.chunks]
    assert indices == [0] * snow.from_chunk + [1] * (len(indices) - snow.from_chunk)
    manifest = PlayManifest.model_validate_json((directory / "manifest.json").read_text())
    assert manifest.play.reason == "quit" and manifest.play.chunks == result.chunks == len(timeline.chunks)
    assert session.worker.poll() is not None  # the private worker is gone

    replay = ReplayClient(directory)
    replay_app = PlayerApp(replay, graphics="halfblock")
    async with replay_app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, lambda: replay.current is not None and replay.current.chunk == forward_chunk, 30)
        assert action_name(replay.current.actions) in ("W", "—")  # the first frame of a latent may be a hold
        await settle(pilot, lambda: replay_app.outcome is not None, 60, "the end of the replay")
        assert replay.frames_shown == manifest.play.frames
        await pilot.press("q")
    assert replay_app.return_value.status == "replayed"


async def test_a_worker_killed_mid_session_is_reported_with_where_the_outputs_are(play_world, start_worker):
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.launch import start_session

    runtime, image = play_world
    worker = start_worker("play")
    from spine_util import wait_until
    from worldplay_cli.rows import unserved_queue_warning

    wait_until(lambda: unserved_queue_warning(runtime.conn, runtime.settings, "play") is None, 30, what="the worker")
    session = start_session(runtime, _request(image), "play")
    client = session.client
    app = PlayerApp(client, graphics="halfblock", queue=session.queue)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(pilot, lambda: client.figures().chunks >= 2, timeout_s=60, what="two chunks")
            # a chunk is kept a moment after it is published: kill once two are on disk
            timeline_path = runtime.settings.output_root / session.job_id / "timeline.json"
            await settle(pilot, lambda: _kept_chunks(timeline_path) >= 2, timeout_s=30, what="two chunks kept")
            # the whole worker at once (a host gone): the worker and its work horse, each in its own group
            for process in [worker, *psutil.Process(worker.pid).children()]:
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            killed = time.monotonic()
            await settle(pilot, lambda: app.outcome is not None, timeout_s=20, what="the dead worker noticed")
            assert time.monotonic() - killed < 10
            message = str(app.message.render())
            assert str(runtime.settings.output_root / session.job_id) in message
            await pilot.press("q")
    finally:
        session.close()
    assert app.return_value.status == "lost"
    assert _kept_chunks(timeline_path) >= 2  # still on disk, for `worldplay play`'s message to point at


def _kept_chunks(timeline_path) -> int:
    if not timeline_path.is_file():
        return 0
    return len(Timeline.model_validate_json(timeline_path.read_text()).chunks)


def test_play_on_a_queue_nobody_serves_says_how_to_start_a_worker(cli, tmp_path):
    started = time.monotonic()
    code, _out, err = cli("play", str(dot_image(tmp_path / "dot.png")), "--queue", "--graphics", "halfblock")
    assert code == 1 and time.monotonic() - started < 10
    assert "no live worker serves queue 'play'" in err and "worldplay worker --queue play" in err
    code, _out, err = cli("play", "--queue-name", "gpu-a", "--graphics", "halfblock")
    assert code == 1 and "worldplay worker --queue gpu-a" in err


def test_play_refuses_bad_input_in_one_line(cli, tmp_path):
    code, _out, err = cli("play", "--graphics", "ascii")
    assert code == 2 and "--graphics 'ascii' is not a mode" in err and "Traceback" not in err
    code, _out, err = cli("play", "--variant", "bi", "--graphics", "halfblock")
    assert code == 2 and "cannot play live" in err
    code, _out, err = cli("play", "--ahead-chunks", "9", "--graphics", "halfblock")
    assert code == 2 and "ahead_chunks" in err and "Traceback" not in err
    code, _out, err = cli("play", "--replay", str(tmp_path), "--graphics", "halfblock")
    assert code == 2 and "not a finished play session" in err
    code, _out, err = cli("play", "--replay", "no-such-job", "--graphics", "halfblock")
    assert code == 2 and "no job 'no-such-job'" in err


async def test_a_native_session_of_the_tiny_model_plays_the_held_keys(play_world, tiny_model_dir):
    """The native engine behind the same player: `--model-dir` reaches the private worker (its owner's
    choice), the keys held at the start drive chunk 0, and q leaves the outputs."""
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.launch import start_session

    runtime, image = play_world
    request = _request(image, engine="native", variant="ar-distilled", model_dir=tiny_model_dir, ahead_chunks=1)
    session = start_session(runtime, request, None)
    client = session.client
    client.sampler.hold_window_s = 3.0  # as above: Pilot's presses are seconds apart on a busy app
    app = PlayerApp(client, graphics="halfblock", queue=session.queue)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            await _hold(pilot, app, ("w",), lambda: client.ready is not None, timeout_s=240, what="Ready")
            await settle(pilot, lambda: client.frames_shown > 0, timeout_s=240, what="chunk 0 on screen")
            await pilot.press("q")
            await settle(pilot, lambda: app.return_value is not None, 240, "the session to end")
    finally:
        session.close()
    result = app.return_value
    assert result.status == "ended" and result.chunks >= 1
    timeline = Timeline.model_validate_json(
        (runtime.settings.output_root / session.job_id / "timeline.json").read_text()
    )
    assert [action_name(action) for action in timeline.chunks[0].actions] == ["—", "W", "W", "W"]
    manifest = PlayManifest.model_validate_json(
        (runtime.settings.output_root / session.job_id / "manifest.json").read_text()
    )
    assert manifest.spec.engine == "native" and manifest.play.frames == result.frames


async def test_a_session_waiting_for_a_busy_worker_says_so_and_q_cancels_it(play_world, start_worker):
    from spine_util import wait_until
    from worldplay_cli import jobs
    from worldplay_cli.rows import unserved_queue_warning
    from worldplay_cli.tui.player.app import PlayerApp
    from worldplay_cli.tui.player.launch import start_session

    runtime, image = play_world
    start_worker("play")
    wait_until(lambda: unserved_queue_warning(runtime.conn, runtime.settings, "play") is None, 30, what="the worker")
    busy = start_session(runtime, _request(image), "play")  # the worker's one session, never played here
    wait_until(lambda: jobs.get_row(runtime.conn, busy.job_id).status == "started", 30, what="the first session")
    waiting = start_session(runtime, _request(image), "play")
    app = PlayerApp(waiting.client, graphics="halfblock", queue=waiting.queue)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(pilot, lambda: "waiting for a worker on queue play" in str(app.figures_view.render()))
            await pilot.press("q")  # nothing to wait for: leaves at once
            await settle(pilot, lambda: app.return_value is not None, 10, "the player to leave")
    finally:
        waiting.close()
        busy.close()
    assert app.return_value.status == "left" and "before a worker took" in app.return_value.message
    assert jobs.get_row(runtime.conn, waiting.job_id).status == "canceled"
    # the session nobody played here is canceled too, without waiting for its idle timeout
    wait_until(lambda: jobs.get_row(runtime.conn, busy.job_id).status in jobs.ENDED, 30, what="the first to end")


def test_worldplay_play_runs_a_session_and_prints_where_its_outputs_are(cli, tmp_path, monkeypatch):
    """The command itself: options -> a private worker -> the app (headless, a scripted user through
    Textual's own autopilot) -> the session's end, printed as JSON."""
    import json

    from worldplay_cli.tui.player.app import PlayerApp

    async def user(pilot):
        client = pilot.app.source
        client.sampler.hold_window_s = 3.0  # as above: Pilot's presses are seconds apart on a busy app
        await settle(pilot, lambda: client.ready is not None, 120, "Ready")
        await pilot.press("w")
        await settle(pilot, lambda: client.figures().chunks >= 1, 120, "a chunk")
        await pilot.press("q")  # the app leaves when Ended arrives

    run = PlayerApp.run
    monkeypatch.setattr(PlayerApp, "run", lambda app: run(app, headless=True, size=(100, 32), auto_pilot=user))
    image = dot_image(tmp_path / "dot.png")
    code, out, err = cli("play", str(image), "--prompt", "a quiet street", "--graphics", "halfblock", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "ended" and result["reason"] == "quit" and result["chunks"] >= 1
    directory = Path(result["output_dir"])
    assert directory.parent == Path(os.environ["WORLDPLAY_OUTPUT_ROOT"]) and (directory / "video.mp4").is_file()
    timeline = Timeline.model_validate_json((directory / "timeline.json").read_text())
    assert timeline.prompts[0].text == "a quiet street"
