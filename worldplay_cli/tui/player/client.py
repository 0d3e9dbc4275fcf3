"""The player's core, free of any terminal: the held keys, the frame buffer and its clock, the session's channel.

`PlayClient` is one live session seen from the player. Three callers drive it, each from its own thread:
- `pump(block_s)` (a reader thread) reads the worker's messages, decodes each chunk's JPEG frames into the
  buffer and, every second, checks that the worker is still there;
- `flush(block_s)` (a sender thread) sends what the player queued (keys, prompt, markers, end) in order,
  and a heartbeat when there was nothing to send for a while;
- `tick(now)` (the display, e.g. a Textual timer) returns the frame due on screen now. Frames are due at
  the video's fps; every 4 frames shown (one latent period of display time) the held keys are sampled, and
  every `chunk_latents` samples become the `Keys` of the next chunk.

Backpressure: a `Keys` message goes out only while fewer than `ahead_chunks` chunks are asked for and not
yet received (`PlaySpec.ahead_chunks`); samples made meanwhile wait in order. At the start `ahead_chunks`
chunks are asked for at once, so the worker generates chunk k+1 while chunk k is shown.

Terminals report key presses, not releases: a key counts as held while it was pressed within the last
`hold_window_s` (0.4 s by default, longer than a terminal's auto-repeat interval, so a key kept down stays
held); space lets go of every key at once. Of two opposite keys (W and S, ← and →, ...) the later one wins.
A sample also takes every key pressed since the previous sample: a short tap, or one made while the video
waits for a chunk, moves one latent rather than nothing.

`ReplayClient` shows a finished session (its `video.mp4` and `timeline.json`) through the same buffer and clock.
"""

from __future__ import annotations

import io
import json
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from worldplay_cli.contract.play import (
    PLAY_KEYS,
    BadMessage,
    Chunk,
    End,
    Ended,
    Failed,
    Heartbeat,
    Keys,
    Marker,
    Ready,
    SetPrompt,
    Timeline,
)

if TYPE_CHECKING:
    from PIL import Image

    from worldplay_cli.contract.play import PlayChannel

HOLD_WINDOW_S = 0.4
FRAMES_PER_LATENT = 4
# How often the reader checks the worker's liveness key, and the sender says it is still there.
ALIVE_CHECK_S = 1.0
HEARTBEAT_S = 5.0
# Frames decoded ahead of the display (a few chunks' worth; the worker is kept at most ahead_chunks ahead).
REPLAY_BUFFER_FRAMES = 64
# Figures are over this many recent chunks / key presses, so the status line follows the session.
RECENT = 50

_OPPOSITE = {"w": "s", "s": "w", "a": "d", "d": "a", "up": "down", "down": "up", "left": "right", "right": "left"}
# Textual key names (and capitals, so caps lock or shift do not matter) -> play keys.
KEY_NAMES = {**{key: key for key in PLAY_KEYS}, **{key.upper(): key for key in "wasd"}}


class KeySampler:
    """Which keys are held, from key presses alone (see the module docstring)."""

    def __init__(self, hold_window_s: float = HOLD_WINDOW_S):
        self.hold_window_s = hold_window_s
        self._last_press: dict[str, float] = {}
        self._hold_started: dict[str, float] = {}
        self._pressed_since_sample: set[str] = set()

    def press(self, key: str, now: float) -> bool:
        """Record a press of a play key (False, and nothing changes, for any other key)."""
        if key not in _OPPOSITE:
            return False
        if not self._held(key, now):
            self._hold_started[key] = now
        self._last_press[key] = now
        self._last_press.pop(_OPPOSITE[key], None)
        self._pressed_since_sample.add(key)
        self._pressed_since_sample.discard(_OPPOSITE[key])
        return True

    def release_all(self) -> None:
        self._last_press.clear()
        self._pressed_since_sample.clear()

    def held(self, now: float) -> list[str]:
        """The held keys, in `PLAY_KEYS` order."""
        return [key for key in PLAY_KEYS if self._held(key, now)]

    def sample(self, now: float) -> list[str]:
        """The keys of one latent: those held now and those pressed since the previous sample, so a tap
        between two samples, or while the video waits for a chunk, still counts once."""
        keys = set(self.held(now))
        # a key let go since its press, unless its opposite is held now (the later press wins)
        keys |= {key for key in self._pressed_since_sample if _OPPOSITE[key] not in keys}
        self._pressed_since_sample.clear()
        return [key for key in PLAY_KEYS if key in keys]

    def hold_started(self, key: str) -> float:
        """When the latest hold of `key` began (its first press within the window)."""
        return self._hold_started[key]

    def _held(self, key: str, now: float) -> bool:
        pressed = self._last_press.get(key)
        return pressed is not None and now - pressed <= self.hold_window_s


@dataclass(frozen=True)
class Shown:
    """A frame due on screen, with what it shows."""

    image: Image.Image
    frame: int  # index in the session's video
    chunk: int
    actions: int  # the action id of the frame's latent
    prompt: str
    marker: str = ""


@dataclass
class Figures:
    """What the status line shows; all times in seconds."""

    chunks: int = 0
    frames_shown: int = 0
    buffered: int = 0
    asked_ahead: int = 0
    generate_s: float | None = None  # median over recent chunks
    latency_p50_s: float | None = None  # key press -> first frame showing it
    latency_p95_s: float | None = None
    fps: float | None = None  # frames shown per second over the last second
    stalls: int = 0  # times the display waited for a chunk
    skipped: int = 0  # frames not drawn because the display was behind


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def decode_jpeg(data: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")


@dataclass
class _Due:
    shown: Shown
    press_times: list[float] = field(default_factory=list)  # presses this frame is the first to show


class FrameClock:
    """A buffer of decoded frames shown at `fps`: one frame per `1 / fps` while the buffer has one."""

    def __init__(self, fps: int = 24, clock: Callable[[], float] = time.monotonic):
        self.fps = fps
        self.clock = clock
        self._lock = threading.Lock()
        self._buffer: deque[_Due] = deque()
        # The clock: frame n after a (re)start is due at `_clock_start + n / fps`, computed from the start
        # each time rather than summed, so a frame is never late by accumulated rounding.
        self._clock_start: float | None = None
        self._clock_frames = 0
        self._shown_times: deque[float] = deque()
        self._starved = False
        self.frames_shown = 0  # frames whose time on screen has come (drawn or skipped)
        self.frames_skipped = 0
        self.stalls = 0
        self.latencies: deque[float] = deque(maxlen=RECENT)
        self.current: Shown | None = None

    def tick(self, now: float | None = None) -> Shown | None:
        """The frame to draw now if one is due, else None.

        A display slower than the video (a busy terminal or CPU) skips frames rather than fall behind:
        the frames passed over count as played, so the keys are still sampled on the video's clock and
        what a press asks for is not delayed by the drawing."""
        now = self.clock() if now is None else now
        with self._lock:
            if not self._buffer:
                # a stall is a frame that was due and was not there
                self._starved = self._starved or (self._clock_start is not None and now >= self._next_frame_at())
                self._on_starved(now)
                return None
            if self._starved or self._clock_start is None:
                # after a wait the clock restarts: no burst of "late" frames
                self.stalls += self._starved
                self._starved = False
                self._clock_start, self._clock_frames = now, 0
            due = None
            while self._buffer and now >= self._next_frame_at():
                self.frames_skipped += due is not None
                due = self._buffer.popleft()
                due_at = self._next_frame_at()
                self._clock_frames += 1
                self.frames_shown += 1
                self.latencies.extend(now - pressed for pressed in due.press_times)
                self.current = due.shown
                self._on_shown(due_at)
            if due is None:
                return None
            self._shown_times.append(now)
            while self._shown_times and now - self._shown_times[0] > 1.0:
                self._shown_times.popleft()
            return due.shown

    def _next_frame_at(self) -> float:
        return self._clock_start + self._clock_frames / self.fps

    def _on_shown(self, due_at: float) -> None:
        """Called under the lock for each frame played, with the time it was due."""

    def _on_starved(self, now: float) -> None:
        """Called under the lock when a frame is asked for and none is buffered."""

    def _push(self, items: list[_Due]) -> None:
        with self._lock:
            self._buffer.extend(items)

    def shown_fps(self) -> float | None:
        with self._lock:
            return float(len(self._shown_times)) if len(self._shown_times) > 1 else None

    def buffered(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True)
class WorkerLost:
    """What `pump` returns when the session's worker stopped answering (or its job ended) without saying so."""

    message: str
    hint: str | None = None


class PlayClient(FrameClock):
    """One live session from the player's side (see the module docstring)."""

    live = True

    def __init__(
        self,
        channel: PlayChannel,
        *,
        ahead_chunks: int = 2,
        max_chunks: int | None = None,
        hold_window_s: float = HOLD_WINDOW_S,
        output_dir: str = "",
        prompt: str = "",
        job_check: Callable[[], WorkerLost | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(clock=clock)
        self.channel = channel
        self.job_id = channel.job_id
        self.ahead_chunks = ahead_chunks
        self.max_chunks = max_chunks  # the worker ends the session after these; asking for more is pointless
        self.sampler = KeySampler(hold_window_s)
        self.output_dir = output_dir
        self.prompt = prompt
        self.pending_prompt: str | None = None
        self.recording = False
        # Before `Ready` the worker has no liveness key yet; `job_check` says whether the job itself ended.
        self.job_check = job_check
        self.ready: Ready | None = None
        self.outcome: Ended | Failed | WorkerLost | None = None
        self.ending = False
        self.bad_messages = 0
        self._outbox: queue.Queue = queue.Queue()
        self._samples: list[tuple[list[str], list[float]]] = []
        self._waiting: deque[tuple[Keys, list[list[float]]]] = deque()
        self._press_times: dict[int, list[list[float]]] = {}  # chunk -> per-latent presses it first shows
        self._previous_sample: set[str] = set()
        self._next_chunk = 0
        self._asked = 0
        self._received = 0
        self._generate_s: deque[float] = deque(maxlen=RECENT)
        self._started = clock()
        self._last_alive_check = 0.0
        self._last_sent = clock()

    # --- input (display thread) ------------------------------------------------------------------------

    def press(self, key: str, now: float | None = None) -> bool:
        """A key press from the terminal: a play key (see `KEY_NAMES`) or space; False for anything else."""
        now = self.clock() if now is None else now
        if key == "space":
            with self._lock:
                self.sampler.release_all()
            return True
        name = KEY_NAMES.get(key)
        if name is None:
            return False
        with self._lock:
            return self.sampler.press(name, now)

    def held(self, now: float | None = None) -> list[str]:
        with self._lock:
            return self.sampler.held(self.clock() if now is None else now)

    def set_prompt(self, text: str) -> str | None:
        """Ask for a new prompt from the next chunk; the reason it was refused, or None."""
        text = " ".join(text.split())
        if not text:
            return "an empty prompt changes nothing; the prompt stays"
        if self.outcome is not None:
            return "the session is over"
        try:
            message = SetPrompt(text=text)
        except ValidationError as error:
            return f"prompt refused: {error.errors()[0]['msg'].lower()} (this one has {len(text)})"
        self.pending_prompt = text
        self._outbox.put(message)
        return None

    def toggle_recording(self) -> bool:
        """Start or stop a recorded stretch: a marker in the timeline at the next chunk. The new state."""
        self.recording = not self.recording
        self._outbox.put(Marker(label="record start" if self.recording else "record stop"))
        return self.recording

    def end(self) -> None:
        """Ask the worker to end the session and write its outputs (`Ended` follows)."""
        if not self.ending and self.outcome is None:
            self.ending = True
            self._outbox.put(End())

    # --- the display clock (display thread) --------------------------------------------------------------

    def _on_shown(self, due_at: float) -> None:
        if self.frames_shown % FRAMES_PER_LATENT == 1:  # frames 0, 4, 8, ... each begin a latent period
            self._sample(due_at)

    def _on_starved(self, now: float) -> None:
        # Nothing to show and nothing asked for (e.g. a display slower than the frames): ask now with the
        # keys held now, rather than wait for samples that only the display makes.
        if self.ready is not None and self._asked == self._received and not self._waiting and self.outcome is None:
            while len(self._samples) < self.ready.chunk_latents:
                self._sample(now, complete=False)
            self._send_ready_keys()

    def _sample(self, now: float, complete: bool = True) -> None:
        held = self.sampler.sample(now)
        new = [self.sampler.hold_started(key) for key in held if key not in self._previous_sample]
        self._previous_sample = set(held)
        self._samples.append((held, new))
        if complete and self.ready is not None and len(self._samples) >= self.ready.chunk_latents:
            self._send_ready_keys()

    def _send_ready_keys(self) -> None:
        latents = self._samples[: self.ready.chunk_latents]
        del self._samples[: self.ready.chunk_latents]
        message = Keys(chunk=self._next_chunk, latents=[keys for keys, _ in latents])
        self._next_chunk += 1
        self._waiting.append((message, [presses for _, presses in latents]))
        self._ask()

    def _ask(self) -> None:
        """Send waiting keys while fewer than `ahead_chunks` chunks are outstanding (under the lock)."""
        while self._waiting and self._asked - self._received < self.ahead_chunks and not self.ending:
            message, presses = self._waiting.popleft()
            if self.max_chunks is not None and message.chunk >= self.max_chunks:
                self._waiting.clear()
                return
            self._press_times[message.chunk] = presses
            self._outbox.put(message.model_copy(update={"sent_at": time.time()}))
            self._asked += 1

    # --- the worker's messages (reader thread) -----------------------------------------------------------

    def pump(self, block_s: float = 0.25) -> list[Ready | Chunk | Ended | Failed | WorkerLost]:
        """Read what the worker sent (waiting up to `block_s`), buffer the frames; what happened, in order."""
        if self.outcome is not None:
            time.sleep(block_s)
            return []
        events = self._read(block_s)
        if self.outcome is None:
            lost = self._check_alive()
            if lost is not None:
                # A worker ending normally publishes `Ended` before it lets go of the session: read once
                # more, so an `Ended` that arrived since the read above is not taken for a lost worker.
                events += self._read(0)
                if self.outcome is None:
                    self.outcome = lost
                    events.append(lost)
        return events

    def _read(self, block_s: float) -> list[Ready | Chunk | Ended | Failed]:
        try:
            read = self.channel.outputs(block_s)
        except BadMessage:
            self.bad_messages += 1  # skipped: the channel already moved past it
            return []
        events: list = []
        for message, frames in read:
            if isinstance(message, Ready):
                self._on_ready(message)
            elif isinstance(message, Chunk):
                self._on_chunk(message, frames)
            elif isinstance(message, Ended | Failed):
                self.outcome = message
                self.output_dir = message.output_dir or self.output_dir
            events.append(message)
            if self.outcome is not None:
                break
        return events

    def _on_ready(self, message: Ready) -> None:
        with self._lock:
            self.ready = message
            self.fps = message.fps
            now = self.clock()
            # ahead_chunks chunks at once, with the keys held now: the pipeline starts full
            for _ in range(self.ahead_chunks):
                while len(self._samples) < message.chunk_latents:
                    self._sample(now, complete=False)
                self._send_ready_keys()

    def _on_chunk(self, message: Chunk, frames: list[bytes]) -> None:
        images = [decode_jpeg(frame) for frame in frames]
        with self._lock:
            presses = self._press_times.pop(message.chunk, [])
            self._received += 1
            self._generate_s.append(message.generate_s)
            if self.pending_prompt is not None and message.prompt == self.pending_prompt:
                self.pending_prompt = None
            self.prompt = message.prompt
            due = []
            for index, image in enumerate(images):
                latent = latent_of_frame(message.chunk, index)
                shown = Shown(
                    image=image,
                    frame=message.first_frame + index,
                    chunk=message.chunk,
                    actions=message.actions[latent] if latent < len(message.actions) else 0,
                    prompt=message.prompt,
                )
                first_of_latent = index == 0 or latent_of_frame(message.chunk, index - 1) != latent
                # chunk 0's first latent is the input image: no key shows there
                shows_keys = first_of_latent and not (message.chunk == 0 and latent == 0)
                due.append(_Due(shown, presses[latent] if shows_keys and latent < len(presses) else []))
            self._buffer.extend(due)
            self._ask()

    def _check_alive(self) -> WorkerLost | None:
        now = self.clock()
        if now - self._last_alive_check < ALIVE_CHECK_S:
            return None
        self._last_alive_check = now
        if self.job_check is not None:
            lost = self.job_check()
            if lost is not None:
                return lost
        if self.ready is not None and not self.channel.worker_alive():
            return WorkerLost(
                "the worker stopped answering (its liveness key expired)",
                f"the outputs of every complete chunk are in {self.output_dir}" if self.output_dir else None,
            )
        return None

    # --- sending (sender thread) -------------------------------------------------------------------------

    def flush(self, block_s: float = 0.25) -> int:
        """Send what is queued (waiting up to `block_s` for something); a heartbeat after `HEARTBEAT_S` of
        silence. The number of messages sent."""
        sent = 0
        try:
            message = self._outbox.get(timeout=block_s)
        except queue.Empty:
            message = None
        while message is not None:
            self.channel.send(message)
            sent += 1
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                message = None
        now = self.clock()
        if sent:
            self._last_sent = now
        elif now - self._last_sent > HEARTBEAT_S and self.outcome is None:
            self.channel.send(Heartbeat())
            self._last_sent = now
        return sent

    # --- figures -----------------------------------------------------------------------------------------

    def figures(self) -> Figures:
        with self._lock:
            latencies = list(self.latencies)
            generate = list(self._generate_s)
            chunks, asked = self._received, self._asked - self._received
        return Figures(
            chunks=chunks,
            frames_shown=self.frames_shown,
            buffered=self.buffered(),
            asked_ahead=asked,
            generate_s=statistics.median(generate) if generate else None,
            latency_p50_s=percentile(latencies, 0.5),
            latency_p95_s=percentile(latencies, 0.95),
            fps=self.shown_fps(),
            stalls=self.stalls,
            skipped=self.frames_skipped,
        )

    def waited_s(self) -> float:
        """How long the session has waited for its worker (until `Ready`)."""
        return self.clock() - self._started


def latent_of_frame(chunk: int, index: int) -> int:
    """The latent (within its chunk) a frame of the chunk belongs to: chunk 0's first latent is one frame
    (the image), every other latent four."""
    if chunk == 0:
        return 0 if index == 0 else (index + FRAMES_PER_LATENT - 1) // FRAMES_PER_LATENT
    return index // FRAMES_PER_LATENT


class ReplayClient(FrameClock):
    """A finished session (`video.mp4` + `timeline.json` of its job directory) through the same display clock."""

    live = False

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic):
        self.directory = directory
        self.timeline = Timeline.model_validate(json.loads((directory / "timeline.json").read_text()))
        super().__init__(fps=self.timeline.fps, clock=clock)
        self.output_dir = str(directory)
        self.job_id = directory.name
        self.prompt = self.timeline.prompts[0].text if self.timeline.prompts else ""
        self.paused = False
        self.finished = False
        self._frames = self._read_frames(directory / "video.mp4")

    def _read_frames(self, video: Path) -> Iterator[Shown]:
        import imageio_ffmpeg
        from PIL import Image

        reader = imageio_ffmpeg.read_frames(str(video))
        try:
            width, height = next(reader)["size"]
            chunks = iter(self.timeline.chunks)
            for chunk in chunks:
                prompt = self.timeline.prompts[chunk.prompt_index].text
                for index in range(chunk.num_frames):
                    data = next(reader, None)
                    if data is None:
                        return
                    latent = latent_of_frame(chunk.chunk, index)
                    yield Shown(
                        image=Image.frombytes("RGB", (width, height), data),
                        frame=chunk.first_frame + index,
                        chunk=chunk.chunk,
                        actions=chunk.actions[latent] if latent < len(chunk.actions) else 0,
                        prompt=prompt,
                        marker=", ".join(chunk.markers) if index == 0 else "",
                    )
        finally:
            reader.close()

    def pump(self, block_s: float = 0.25) -> list:
        """Decode frames ahead of the display (the reader thread's work)."""
        if self.finished or self.buffered() >= REPLAY_BUFFER_FRAMES:
            time.sleep(block_s)
            return []
        batch = []
        for shown in self._frames:
            batch.append(_Due(shown))
            if len(batch) >= REPLAY_BUFFER_FRAMES // 4:
                break
        else:
            self.finished = True
        self._push(batch)
        return []

    def tick(self, now: float | None = None) -> Shown | None:
        return None if self.paused else super().tick(now)

    def toggle_pause(self) -> bool:
        with self._lock:
            self.paused = not self.paused
            self._clock_start = None  # resume on time, not with the frames "missed" while paused
        return self.paused

    def figures(self) -> Figures:
        return Figures(
            chunks=len(self.timeline.chunks),
            frames_shown=self.frames_shown,
            buffered=self.buffered(),
            generate_s=statistics.median(c.generate_s for c in self.timeline.chunks) if self.timeline.chunks else None,
            fps=self.shown_fps(),
            stalls=self.stalls,
            skipped=self.frames_skipped,
        )
