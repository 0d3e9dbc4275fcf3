"""The player's core (`PlayClient`, `KeySampler`, the display clock) and its Textual app, against a small
in-test worker that speaks the play protocol on a real Redis (tests/test_player_worker.py runs the real one)."""

from __future__ import annotations

import io
import threading
import time

import pytest

from spine_util import wait_until
from tui_util import settle
from worldplay_cli.contract.play import (
    Chunk,
    End,
    Ended,
    Keys,
    PlayChannel,
    Ready,
    SetPrompt,
    frames_of_chunk,
    output_key,
)
from worldplay_cli.tui.player.client import KeySampler, PlayClient, WorkerLost, latent_of_frame

CHUNK_LATENTS = 4
# Translation/rotation classes of trajectories.actions for single keys: enough to tell keys apart.
_TRANSLATION = {"w": 1, "s": 2, "d": 3, "a": 4}
_ROTATION = {"right": 1, "left": 2, "up": 3, "down": 4}


def _action(keys: list[str]) -> int:
    translation = next((_TRANSLATION[key] for key in keys if key in _TRANSLATION), 0)
    rotation = next((_ROTATION[key] for key in keys if key in _ROTATION), 0)
    return translation * 9 + rotation


def _jpeg(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (shade, 255 - shade, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


class FakeWorker(threading.Thread):
    """A worker side that generates a chunk per `Keys` (solid frames), honours prompts and `End`, and
    records what it saw: every Keys message, the most chunks it was ever asked ahead, the prompts used."""

    def __init__(self, conn, job_id: str, fps: int = 96, generate_s: float = 0.0, ready: bool = True):
        super().__init__(daemon=True)
        self.channel = PlayChannel(conn, job_id)
        self.fps, self.generate_s, self.send_ready = fps, generate_s, ready
        self.keys: list[Keys] = []
        self.chunks: list[Chunk] = []
        self.max_outstanding = 0
        self.alive = True  # False: stop refreshing the liveness key (a dead worker)
        self.stop = threading.Event()

    def run(self) -> None:
        channel = self.channel
        prompt, pending, frames_done = "a meadow", [], 0
        if self.send_ready:
            channel.touch_worker()
            channel.publish(Ready(engine="fake", variant="ar-distilled", chunk_latents=CHUNK_LATENTS, width=32,
                                  height=16, fps=self.fps))  # fmt: skip
        while not self.stop.is_set():
            if self.alive:
                channel.touch_worker()
            for message in channel.inputs(0.02):
                if isinstance(message, Keys):
                    self.keys.append(message)
                    pending.append(message)
                    self.max_outstanding = max(self.max_outstanding, len(pending))
                elif isinstance(message, SetPrompt):
                    prompt = message.text
                elif isinstance(message, End):
                    channel.publish(Ended(reason="quit", chunks=len(self.chunks), frames=frames_done,
                                          output_dir="/outputs/fake"))  # fmt: skip
                    channel.release_worker()
                    return
            if pending:
                keys = pending.pop(0)
                time.sleep(self.generate_s)
                count = frames_of_chunk(keys.chunk, CHUNK_LATENTS)
                chunk = Chunk(chunk=keys.chunk, actions=[0] + [_action(k) for k in keys.latents[1:]] if keys.chunk == 0
                              else [_action(k) for k in keys.latents], keys=keys.latents, prompt=prompt,
                              num_frames=count, first_frame=frames_done, generate_s=self.generate_s,
                              latency_s=time.time() - keys.sent_at)  # fmt: skip
                channel.publish(chunk, [_jpeg((keys.chunk * 40) % 256)] * count)
                self.chunks.append(chunk)
                frames_done += count


@pytest.fixture
def fake_worker(redis_conn):
    started = []

    def start(job_id: str = "job-1", **options) -> FakeWorker:
        worker = FakeWorker(redis_conn, job_id, **options)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop.set()
        worker.join(timeout=5)


def _drive(client: PlayClient, condition, timeout: float = 15.0, what: str = "the session"):
    """Run the client's three loops in this thread until `condition()` holds; the events seen."""
    events = []

    def step():
        events.extend(client.pump(0.01))
        client.flush(0.001)
        client.tick()
        return condition()

    wait_until(step, timeout, interval=0.002, what=what)
    return events


# --- KeySampler -------------------------------------------------------------------------------------------


def test_a_key_is_held_within_the_hold_window_and_auto_repeat_keeps_it_held():
    sampler = KeySampler(hold_window_s=0.4)
    assert sampler.press("w", 10.0)
    assert sampler.held(10.3) == ["w"]
    assert sampler.held(10.41) == []
    for repeat in range(10):  # a key kept down: the terminal repeats it every 0.03-0.1 s
        sampler.press("w", 11.0 + repeat * 0.1)
    assert sampler.held(11.0 + 9 * 0.1 + 0.35) == ["w"]
    assert sampler.hold_started("w") == 11.0


def test_combinations_hold_together_the_later_of_two_opposites_wins_and_unknown_keys_change_nothing():
    sampler = KeySampler()
    sampler.press("w", 1.0)
    sampler.press("right", 1.1)
    assert sampler.held(1.2) == ["w", "right"]
    sampler.press("s", 1.3)
    assert sampler.held(1.35) == ["s", "right"]
    assert not sampler.press("x", 1.36)
    assert not sampler.press("space", 1.36)
    assert sampler.held(1.37) == ["s", "right"]
    sampler.release_all()
    assert sampler.held(1.38) == []


def test_a_tap_between_two_samples_counts_once_and_space_forgets_it():
    sampler = KeySampler(hold_window_s=0.4)
    sampler.press("a", 1.0)
    sampler.press("right", 1.1)
    assert sampler.held(2.0) == []  # both let go long before the next sample (e.g. a wait for a chunk)
    assert sampler.sample(2.0) == ["a", "right"]
    assert sampler.sample(2.2) == []
    sampler.press("w", 3.0)
    sampler.press("s", 3.1)  # the later of two opposites
    assert sampler.sample(5.0) == ["s"]
    sampler.press("d", 6.0)
    sampler.release_all()
    assert sampler.sample(6.1) == []


def test_frames_map_to_their_latents_chunk_zero_starting_with_the_image():
    assert [latent_of_frame(0, index) for index in range(13)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert [latent_of_frame(3, index) for index in range(16)] == [i // 4 for i in range(16)]


# --- PlayClient against the in-test worker ----------------------------------------------------------------


def test_held_keys_become_the_actions_of_a_following_chunk_and_backpressure_holds(redis_conn, fake_worker):
    worker = fake_worker(fps=96)
    client = PlayClient(PlayChannel(redis_conn, "job-1"), ahead_chunks=2)
    _drive(client, lambda: client.ready is not None and client.frames_shown > 5, what="the first frames")

    def hold_w():
        client.press("w")
        return any(keys.latents == [["w"]] * CHUNK_LATENTS for keys in worker.keys)

    _drive(client, hold_w, what="keys of held W")
    _drive(client, lambda: any(chunk.keys == [["w"]] * CHUNK_LATENTS for chunk in worker.chunks))
    forward = next(chunk for chunk in worker.chunks if chunk.keys == [["w"]] * CHUNK_LATENTS)
    assert forward.actions == [_action(["w"])] * CHUNK_LATENTS
    # the player never had more than ahead_chunks chunks asked for and not received
    assert worker.max_outstanding <= 2
    assert [keys.chunk for keys in worker.keys] == list(range(len(worker.keys)))
    # the press is measured when the first frame showing it is on screen
    _drive(client, lambda: client.figures().latency_p50_s is not None, what="a key -> frame latency")
    figures = client.figures()
    assert 0 < figures.latency_p50_s < 5
    assert figures.chunks >= 3


def test_a_new_prompt_lands_at_a_chunk_boundary_and_bad_prompts_are_refused(redis_conn, fake_worker):
    worker = fake_worker()
    client = PlayClient(PlayChannel(redis_conn, "job-1"), prompt="a meadow")
    _drive(client, lambda: client.frames_shown > 3)
    assert client.set_prompt("   ") is not None
    assert "at most 4000 characters" in client.set_prompt("x" * 5000)
    assert client.set_prompt("  a   snowy meadow ") is None
    assert client.pending_prompt == "a snowy meadow"
    _drive(client, lambda: client.pending_prompt is None, what="the new prompt in a chunk")
    prompts = [chunk.prompt for chunk in worker.chunks]
    first_new = prompts.index("a snowy meadow")
    assert set(prompts[:first_new]) == {"a meadow"} and set(prompts[first_new:]) == {"a snowy meadow"}
    _drive(client, lambda: client.current is not None and client.current.prompt == "a snowy meadow")


def test_end_waits_for_ended_and_a_worker_that_goes_quiet_is_noticed(redis_conn, fake_worker):
    fake_worker()
    client = PlayClient(PlayChannel(redis_conn, "job-1"))
    _drive(client, lambda: client.frames_shown > 0)
    client.end()
    events = _drive(client, lambda: client.outcome is not None, what="Ended")
    assert isinstance(client.outcome, Ended) and client.output_dir == "/outputs/fake"
    assert any(isinstance(event, Ended) for event in events)
    assert client.set_prompt("too late") == "the session is over"

    quiet = fake_worker("job-2")
    lost_client = PlayClient(PlayChannel(redis_conn, "job-2"), output_dir="/outputs/job-2")
    _drive(lost_client, lambda: lost_client.frames_shown > 0)
    quiet.alive = False
    redis_conn.delete("worldplay:play:job-2:worker")
    started = time.monotonic()
    _drive(lost_client, lambda: lost_client.outcome is not None, timeout=10, what="the lost worker")
    assert isinstance(lost_client.outcome, WorkerLost)
    assert "/outputs/job-2" in lost_client.outcome.hint
    assert time.monotonic() - started < 5


def test_a_display_slower_than_the_video_skips_frames_and_keeps_sampling_on_the_video_clock(redis_conn, fake_worker):
    worker = fake_worker(fps=24)
    client = PlayClient(PlayChannel(redis_conn, "job-1"), ahead_chunks=2)

    def buffered_without_display():
        client.pump(0.01)
        client.flush(0.001)
        return client.buffered() == 13 + 16

    wait_until(buffered_without_display, 15, what="chunks 0 and 1 buffered")
    start = time.monotonic()
    assert client.tick(start).frame == 0
    client.press("w", start)
    late = client.tick(start + 20 / 24)  # the display was busy for 20 frame periods
    assert late.frame == 20 and client.frames_skipped == 19 and client.frames_shown == 21
    # the frames passed over still took their key samples, each at its own due time: frame 0 before the
    # press, frames 4 and 8 within its 0.4 s hold, frame 12 (0.5 s) after it
    _drive(client, lambda: len(worker.keys) == 3, what="chunk 2's keys")
    assert worker.keys[2].latents == [[], ["w"], ["w"], []]


def test_a_message_that_is_not_a_play_message_is_skipped(redis_conn, fake_worker):
    redis_conn.xadd(output_key("job-1"), {"m": b'{"type": "chunk", "surprise": 1}'})
    fake_worker()
    client = PlayClient(PlayChannel(redis_conn, "job-1"))
    _drive(client, lambda: client.frames_shown > 0)
    assert client.bad_messages == 1


# --- the app (Pilot) --------------------------------------------------------------------------------------


async def test_app_plays_keys_prompt_and_quit(redis_conn, fake_worker):
    from worldplay_cli.tui.player.app import PlayerApp

    worker = fake_worker(fps=48)
    # Pilot's press waits (up to a second) for the app to go idle, which a playing app never does: a
    # hold window of a few seconds keeps the test's "held" keys held between its presses.
    client = PlayClient(PlayChannel(redis_conn, "job-1"), prompt="a meadow", hold_window_s=3.0)
    app = PlayerApp(client, graphics="halfblock")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, lambda: client.frames_shown > 4, what="frames on screen")
        assert app.video._strips  # the frame is drawn

        deadline = time.monotonic() + 20
        while not any(keys.latents[-1] == ["w", "right"] for keys in worker.keys):
            assert time.monotonic() < deadline, "held W + → never reached the worker"
            await pilot.press("w", "right")
        await settle(pilot, lambda: any(c.actions[-1] == _action(["w", "right"]) for c in worker.chunks))

        await pilot.press("p")
        assert app.focused is app.query_one("#prompt-input")
        # typed into the prompt, keys are text: no move, no quit, no hold, no marker
        await pilot.press(*"wet road", "space", *"quiet", "enter")
        prompt = "wet road quiet"
        assert client.pending_prompt == prompt or any(c.prompt == prompt for c in worker.chunks)
        assert not client.recording and app.return_value is None
        await settle(pilot, lambda: any(c.prompt == prompt for c in worker.chunks), what="the new prompt")
        await settle(pilot, lambda: prompt in str(app.prompt_view.render()), what="the prompt shown")

        await pilot.press("p", "enter")  # an empty prompt: refused, no crash
        assert "empty prompt" in str(app.message.render())

        await pilot.press("r")
        assert client.recording

        await pilot.press("q")
        await settle(pilot, lambda: app.return_value is not None, what="the session to end")
    result = app.return_value
    assert result.status == "ended" and result.output_dir == "/outputs/fake"


async def test_app_says_why_when_the_worker_dies(redis_conn, fake_worker):
    from worldplay_cli.tui.player.app import PlayerApp

    worker = fake_worker()
    client = PlayClient(PlayChannel(redis_conn, "job-1"), output_dir="/outputs/job-1")
    app = PlayerApp(client, graphics="halfblock")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, lambda: client.frames_shown > 0)
        worker.alive = False
        redis_conn.delete("worldplay:play:job-1:worker")
        await settle(pilot, lambda: app.outcome is not None, timeout_s=10, what="the lost worker")
        message = str(app.message.render())
        assert "stopped answering" in message and "/outputs/job-1" in message
        await pilot.press("w", "x", "f5", "q")  # keys after the end change nothing, q leaves at once
    assert app.return_value.status == "lost"


@pytest.mark.parametrize("mode", ["kitty", "sixel", "halfblock"])
async def test_every_graphics_mode_draws_a_frame(mode):
    from PIL import Image
    from textual.app import App

    from worldplay_cli.tui.player.widgets import resolve_graphics, video_widget

    assert resolve_graphics(mode) == mode
    video = video_widget(mode)

    class One(App):
        def compose(self):
            yield video

    async with One().run_test(size=(40, 12)) as pilot:
        video.show(Image.new("RGB", (64, 32), (200, 10, 10)))
        await pilot.pause()
        drawn = video._strips if mode == "halfblock" else video.picture.image
        assert drawn  # half-block rows, or the picture textual-image sends to the terminal
    # auto never fails: without a kitty/sixel terminal (as here) it is half blocks
    assert resolve_graphics("auto") == "halfblock"


def test_a_frame_is_due_exactly_n_periods_after_the_clock_starts_whatever_the_start():
    """Due times come from the start, not from summing 1/fps: summed, frame 20 of a clock started at some
    times fell due a rounding error after start + 20/24 and was shown one tick late."""
    from PIL import Image

    from worldplay_cli.tui.player.client import FrameClock, Shown, _Due

    image = Image.new("RGB", (2, 2))
    for start in (0.1 * index + 1234.567 for index in range(200)):
        clock = FrameClock(fps=24)
        clock._buffer.extend(_Due(Shown(image, frame, 0, 0, "")) for frame in range(30))
        assert clock.tick(start).frame == 0
        assert clock.tick(start + 20 / 24).frame == 20, start
