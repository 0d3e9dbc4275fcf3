"""Live play sessions: the session spec, the messages a player and a worker exchange, and their channel.

A session is a job like any other (`PlaySpec`, task `worker.tasks.play`, listed with the rest), served
by a worker that keeps its model resident. While it runs, the player and the worker talk over two
capped Redis streams of the job:

player -> worker  `worldplay:play:<job id>:in`   `Keys` (the held keys of the next chunk's latents),
                                                  `SetPrompt`, `Marker`, `Heartbeat`, `End`
worker -> player  `worldplay:play:<job id>:out`  `Ready` once, `Chunk` per generated chunk (its frames as
                                                  JPEG bytes in fields `frame:0`...), `Ended` or `Failed`

Backpressure is the player's: the worker generates a chunk only when a `Keys` message asks for it, and a
player never has more than `PlaySpec.ahead_chunks` chunks asked for and not yet received. The worker
refreshes `worldplay:play:<job id>:worker` (a key with a short expiry) while the session runs, so a
player learns within seconds that its worker died; a worker ends a session whose player sent nothing
for `idle_timeout_s`, so a session never holds a GPU without a client.

Every message is a pydantic model with `extra="forbid"`: a message that does not validate is logged and
skipped by the worker (a bad key never ends a session), never half-read.

This module imports only pydantic, redis (for the channel) and the rest of the contract.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from worldplay_cli.contract import variants
from worldplay_cli.contract.settings import MemoryProfile, Variant
from worldplay_cli.contract.specs import (
    SCHEMA_VERSION,
    TASK_PLAY,
    ImageRef,
    Manifest,
    attention_window_problem,
    known_engine,
    multiple_of_16,
)

if TYPE_CHECKING:
    from redis import Redis

# The keys a player may hold during a latent; the names and step sizes are the trajectory grammar's
# (`trajectories.poses`), so a played path reads back as a pose string.
PLAY_KEYS = ("w", "a", "s", "d", "up", "down", "left", "right")

# How long the worker's liveness key lives, and how often the worker refreshes it.
WORKER_ALIVE_TTL_S = 5
WORKER_ALIVE_EVERY_S = 1.0
# Stream caps: inputs are small; outputs carry frames, so only the chunks a player can be behind by.
INPUT_MAXLEN = 1000
OUTPUT_MAXLEN = 16
# Both streams and the liveness key expire this long after their last write.
STREAM_TTL_S = 3600
# The queue sessions go to unless told otherwise: play workers keep their own model resident.
PLAY_QUEUE = "play"

# A session's job directory keeps each complete chunk as it is generated, before it is published: its JPEG
# frames (`segments/chunk-00000/000.jpg`, ...) beside `timeline.json` and `trajectory.json`, then its
# segment (`segments/chunk-00000.mp4`) made from them in the background; so a worker killed mid-session
# leaves every chunk its player was shown.
SEGMENTS_DIR = "segments"


def segment_name(chunk: int) -> str:
    """The file of chunk `chunk`'s frames in `SEGMENTS_DIR` (names sort in chunk order)."""
    return f"chunk-{chunk:05d}.mp4"


def chunk_frames_name(chunk: int) -> str:
    """The directory of chunk `chunk`'s JPEG frames in `SEGMENTS_DIR` (`000.jpg`, ... in frame order)."""
    return f"chunk-{chunk:05d}"


def input_key(job_id: str) -> str:
    return f"worldplay:play:{job_id}:in"


def output_key(job_id: str) -> str:
    return f"worldplay:play:{job_id}:out"


def worker_alive_key(job_id: str) -> str:
    return f"worldplay:play:{job_id}:worker"


def image_key(job_id: str) -> str:
    """The session's input image (PNG bytes), for a worker that does not share the player's output root."""
    return f"worldplay:play:{job_id}:image"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the session spec -----------------------------------------------------------------------------------


class PlaySpec(_Model):
    """One live session, fully resolved. Its image is `image.file` in the job directory, as for `JobSpec`;
    None: text-to-video (the native engine on a family that needs no image)."""

    version: Literal[1] = SCHEMA_VERSION
    kind: Literal["play"] = "play"
    prompt: str
    negative_prompt: str = ""
    image: ImageRef | None
    engine: str
    variant: Variant
    seed: int = Field(default=1, ge=0, lt=2**32)
    steps: int = Field(ge=1, le=1000)
    guidance: float = Field(ge=0, le=50)
    width: int = Field(gt=0, le=4096)
    height: int = Field(gt=0, le=4096)
    fps: int = Field(default=24, ge=1, le=120)
    # the session ends by itself after this many chunks (a bound on disk and on a forgotten session)
    max_chunks: int = Field(default=1000, ge=1, le=100_000)
    idle_timeout_s: float = Field(default=30.0, gt=0, le=86400)
    ahead_chunks: int = Field(default=2, ge=1, le=8)
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    timeout_s: int = Field(gt=0)
    model_dir: str | None = None
    memory_profile: MemoryProfile | None = None
    # the attention sink + local window of `JobSpec`: with it a session's memory stays bounded at any length
    sink_latents: int | None = Field(default=None, ge=0)
    local_window_latents: int | None = Field(default=None, ge=1)

    _engine = field_validator("engine")(known_engine)
    _size = field_validator("width", "height")(multiple_of_16)

    @model_validator(mode="after")
    def _autoregressive(self) -> PlaySpec:
        record = variants.get(self.variant)
        if not record.plays_live:
            live = ", ".join(record.name for record in variants.all_variants() if record.plays_live)
            why = "is bidirectional" if record.model_type != "ar" else f"({record.family.title}) has no live stream"
            raise ValueError(f"variant {self.variant} {why}; live play needs one of: {live}")
        if self.engine != "preview" and not self.prompt.strip():
            raise ValueError(f"engine {self.engine} needs a prompt")
        if self.image is None and record.family.image_required:
            raise ValueError(
                f"variant {self.variant} needs a reference image ({record.family.title} is image-to-video)"
            )
        if self.image is None and self.engine == "preview":
            raise ValueError("the preview engine re-projects a reference image; give one")
        problem = record.family.check_size(self.width, self.height)
        if problem is not None:
            raise ValueError(problem)
        if self.guidance > 1 and not record.family.guided:
            raise ValueError(
                f"{record.family.title} runs without classifier-free guidance: omit --guidance (or give 1)"
            )
        problem = attention_window_problem(self.engine, self.variant, self.sink_latents, self.local_window_latents)
        if problem is not None:
            raise ValueError(problem[0])
        return self

    @property
    def chunk_latents(self) -> int:
        return variants.get(self.variant).chunk_latents

    task: ClassVar[str] = TASK_PLAY
    rerun_first: ClassVar[bool] = False  # never re-run: a session lives only while its player is there

    def summary(self, queue: str) -> dict:
        """What job listings show of a session (the keys of `JobSpec.summary`); `frames` grows as it plays."""
        return {
            "kind": self.kind,
            "engine": self.engine,
            "variant": self.variant,
            "prompt": self.prompt[:120],
            "frames": 0,
            "width": self.width,
            "height": self.height,
            "output_name": None,
            "queue": queue,
        }

    def description(self) -> str:
        return f"play {self.engine}/{self.variant}: {self.prompt[:60]}"


def frames_of_chunk(chunk: int, chunk_latents: int) -> int:
    """Frames a chunk adds to the video: the first latent is one frame (the image), every other latent four."""
    return chunk_latents * 4 - 3 if chunk == 0 else chunk_latents * 4


# --- player -> worker -----------------------------------------------------------------------------------


class Keys(_Model):
    """The keys held during each latent of chunk `chunk` (0-based): `len(latents) == chunk_latents`. For
    chunk 0 the first latent is the input image and its keys are ignored (its action is always 0)."""

    type: Literal["keys"] = "keys"
    chunk: int = Field(ge=0)
    latents: list[list[Literal["w", "a", "s", "d", "up", "down", "left", "right"]]] = Field(min_length=1, max_length=64)
    sent_at: float = Field(default_factory=time.time)


class SetPrompt(_Model):
    """A new prompt, used from the next chunk the worker starts."""

    type: Literal["prompt"] = "prompt"
    text: str = Field(min_length=1, max_length=4000)


class Marker(_Model):
    """A recording marker the player set (`r`), kept in the timeline at the next chunk."""

    type: Literal["marker"] = "marker"
    label: str = Field(default="", max_length=200)


class Heartbeat(_Model):
    type: Literal["heartbeat"] = "heartbeat"


class End(_Model):
    type: Literal["end"] = "end"


PlayInput = Annotated[Keys | SetPrompt | Marker | Heartbeat | End, Field(discriminator="type")]

# --- worker -> player -----------------------------------------------------------------------------------


class Ready(_Model):
    """The session is loaded and waits for chunk 0's keys."""

    type: Literal["ready"] = "ready"
    version: Literal[1] = SCHEMA_VERSION
    engine: str
    variant: str
    chunk_latents: int
    width: int
    height: int
    fps: int
    load_s: float = 0.0
    reused_weights: bool = False


class Chunk(_Model):
    """Chunk `chunk` is generated; its `num_frames` JPEG frames are the message's `frame:<i>` fields."""

    type: Literal["chunk"] = "chunk"
    chunk: int
    actions: list[int]  # the action id (0-80) of each latent of the chunk
    keys: list[list[str]]  # the keys those actions came from
    prompt: str
    num_frames: int
    first_frame: int  # index in the whole video of the chunk's first frame
    generate_s: float  # time the worker spent on the chunk (denoise + decode)
    latency_s: float  # keys sent -> chunk published (clocks of both hosts; meaningful on one host)
    context: list[int] = Field(default_factory=list)  # latents the memory conditioned it on (native)


class Ended(_Model):
    """The session is over and its outputs are written."""

    type: Literal["ended"] = "ended"
    reason: Literal["quit", "idle", "max_chunks", "canceled"]
    chunks: int
    frames: int
    output_dir: str
    message: str = ""


class Failed(_Model):
    """The session failed; the outputs of every complete chunk are still written to `output_dir`."""

    type: Literal["failed"] = "failed"
    message: str
    hint: str | None = None
    chunks: int = 0
    output_dir: str = ""


PlayOutput = Annotated[Ready | Chunk | Ended | Failed, Field(discriminator="type")]

_INPUT = TypeAdapter(PlayInput)
_OUTPUT = TypeAdapter(PlayOutput)


class BadMessage(ValueError):
    """A stream entry that is not a message of this version."""


def _decode(adapter: TypeAdapter, fields: dict) -> BaseModel:
    raw = fields.get(b"m") if b"m" in fields else fields.get("m")
    if raw is None:
        raise BadMessage("stream entry without a message field 'm'")
    try:
        return adapter.validate_python(json.loads(raw))
    except (ValueError, ValidationError) as error:
        first = str(error).splitlines()[0][:200]
        raise BadMessage(f"not a play message: {first}") from None


# --- the timeline a session records ---------------------------------------------------------------------


class TimelineChunk(_Model):
    chunk: int
    keys: list[list[str]]
    actions: list[int]
    prompt_index: int  # into `Timeline.prompts`
    first_frame: int
    num_frames: int
    generate_s: float
    markers: list[str] = Field(default_factory=list)


class PromptChange(_Model):
    text: str
    from_chunk: int


class Timeline(_Model):
    """`timeline.json` of a session: what was held, when the prompt changed, and each chunk's figures."""

    version: Literal[1] = SCHEMA_VERSION
    chunk_latents: int
    fps: int
    prompts: list[PromptChange]
    chunks: list[TimelineChunk]


class PlayOutcome(_Model):
    """How a session ended, in its manifest."""

    reason: Literal["quit", "idle", "max_chunks", "canceled", "failed"]
    chunks: int
    frames: int
    skipped_messages: int = 0  # player messages logged and skipped (bad, or keys for the wrong chunk)


class PlayManifest(Manifest):
    """`manifest.json` of a session: a generation job's manifest with the session's spec and its outcome."""

    spec: PlaySpec
    play: PlayOutcome | None = None


# --- the channel ----------------------------------------------------------------------------------------


class PlayChannel:
    """Both ends of one session's streams. The player uses `send`/`outputs`, the worker `inputs`/`publish`;
    each side reads from where it last read, so no message is seen twice."""

    def __init__(self, conn: Redis, job_id: str):
        self.conn = conn
        self.job_id = job_id
        self._read_input = "0-0"
        self._read_output = "0-0"

    # player side
    def send(self, message: Keys | SetPrompt | Marker | Heartbeat | End) -> None:
        self._add(input_key(self.job_id), {"m": message.model_dump_json()}, INPUT_MAXLEN)

    def outputs(self, block_s: float) -> list[tuple[Ready | Chunk | Ended | Failed, list[bytes]]]:
        """The worker's messages since the last call (waiting up to `block_s` for the first), each with
        its frames (JPEG bytes, in order; empty for messages other than `Chunk`)."""
        read = []
        for entry_id, fields in self._read(output_key(self.job_id), self._read_output, block_s):
            self._read_output = entry_id
            message = _decode(_OUTPUT, fields)
            frames = []
            if isinstance(message, Chunk):
                frames = [fields[f"frame:{index}".encode()] for index in range(message.num_frames)]
            read.append((message, frames))
        return read

    def worker_alive(self) -> bool:
        return bool(self.conn.exists(worker_alive_key(self.job_id)))

    # worker side
    def inputs(self, block_s: float) -> list[PlayInput | BadMessage]:
        """The player's messages since the last call (waiting up to `block_s` for the first); an entry that
        does not validate comes back as its `BadMessage`, for the worker to log and skip."""
        read: list = []
        for entry_id, fields in self._read(input_key(self.job_id), self._read_input, block_s):
            self._read_input = entry_id
            try:
                read.append(_decode(_INPUT, fields))
            except BadMessage as error:
                read.append(error)
        return read

    def publish(self, message: Ready | Chunk | Ended | Failed, frames: list[bytes] = ()) -> None:
        fields: dict[str, str | bytes] = {"m": message.model_dump_json()}
        fields.update({f"frame:{index}": frame for index, frame in enumerate(frames)})
        self._add(output_key(self.job_id), fields, OUTPUT_MAXLEN)

    def touch_worker(self) -> None:
        self.conn.set(worker_alive_key(self.job_id), "1", ex=WORKER_ALIVE_TTL_S)

    def release_worker(self) -> None:
        self.conn.delete(worker_alive_key(self.job_id))

    # the input image travels over Redis too: a GPU host serving a laptop's player needs only the Redis
    def put_image(self, png: bytes) -> None:
        self.conn.set(image_key(self.job_id), png, ex=STREAM_TTL_S)

    def take_image(self) -> bytes | None:
        return self.conn.getdel(image_key(self.job_id))

    def _add(self, key: str, fields: dict, maxlen: int) -> None:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
            pipe.expire(key, STREAM_TTL_S)
            pipe.execute()

    def _read(self, key: str, after: str, block_s: float) -> list[tuple[str, dict]]:
        block_ms = max(1, int(block_s * 1000)) if block_s > 0 else None
        answer = self.conn.xread({key: after}, block=block_ms)
        entries = []
        for _stream, items in answer or []:
            for entry_id, fields in items:
                entries.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
        return entries
