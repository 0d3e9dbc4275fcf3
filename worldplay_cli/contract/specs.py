"""The contract between the CLI and the worker: job specs, progress, failures, manifests, queue protocol.

Everything that crosses Redis or lands in an output directory is a versioned pydantic model with
`extra="forbid"`, so a spec the worker does not understand is refused, never half-read. This module
imports no rq, no torch and nothing from `worker`; the worker imports it.

A job's inputs live on disk next to its outputs (`<output root>/<job id>/input.png`, `trajectory.json`),
written when the job is enqueued; the spec in Redis refers to them by name and checksum. So Redis holds
no blobs, and a worker on another host only needs the shared output root.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worldplay_cli.contract import sr, variants
from worldplay_cli.contract.buckets import RESOLUTION_BASE, bucket_size  # noqa: F401  (submit reads bucket_size here)
from worldplay_cli.contract.settings import MemoryProfile, Variant

SCHEMA_VERSION = 1

# --- queue protocol -------------------------------------------------------------------------------------

# The only functions a worker will run. rq resolves any importable dotted path (even builtins), so
# anyone able to write to Redis could otherwise run code on every worker; see docs/queue-and-workers.md.
TASK_GENERATE = "worker.tasks.generate"
TASK_NOOP = "worker.tasks.noop"  # health checks and queue benchmarks
TASK_TRAIN = "worker.training.job.train"  # a `worldplay train --queue` job (contract.training)
TASK_PLAY = "worker.tasks.play"  # a live `worldplay play` session (contract.play)
TASK_EVAL = "worker.tasks.eval"  # `worldplay eval` of a finished job, as a queue job (contract.evaljob)
ALLOWED_TASKS = frozenset({TASK_GENERATE, TASK_NOOP, TASK_TRAIN, TASK_PLAY, TASK_EVAL})

# Sorted set: job id -> rq's creation time of the job (seconds since the epoch), newest last. Every job
# enqueued through `contract.queue` is in it; `jobs list` pages it newest first.
JOBS_INDEX = "worldplay:jobs"
# Set: jobs that ended stopped (the worker notes each as it records the stop); rq files a stopped job with
# the failed ones, and this small set lets a listing tell the two apart without reading every failed job.
STOPPED_SET = "worldplay:stopped"
QUEUES_SET = "worldplay:queues"  # every queue a job was ever sent to (the reaper sweeps them all)


# How much of a job's --name goes into its id (and so its output directory name).
JOB_ID_NAME_CHARS = 24


def log_stream_key(job_id: str) -> str:
    return f"worldplay:log:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"worldplay:cancel:{job_id}"


def run_key(job_id: str) -> str:
    """Holds the execution id allowed to commit the job's outputs (fencing against a presumed-dead run)."""
    return f"worldplay:run:{job_id}"


def worker_info_key(worker_name: str) -> str:
    return f"worldplay:worker:{worker_name}"


def new_job_id(name: str | None = None) -> str:
    """Sortable and readable, used as the output directory name: `20260522-141503-9f2c1a`, or with the
    job's `--name` as a slug after it, `20260522-141503-9f2c1a-rainy-street` (rq ids allow only letters,
    digits, `_` and `-`)."""
    job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    slug = re.sub(r"[^a-z0-9_]+", "-", (name or "").lower()).strip("-")[:JOB_ID_NAME_CHARS].strip("-")
    return f"{job_id}-{slug}" if slug else job_id


def job_id_token(job_id: str) -> str:
    """The random part of a job id (`9f2c1a`), unique enough to type."""
    parts = job_id.split("-")
    return parts[2] if len(parts) > 2 else job_id


# --- a job's videos ---------------------------------------------------------------------------------------

VIDEO_FILE = "video.mp4"  # the video of every job: clean (no overlay), 720p with --sr
PRE_SR_VIDEO_FILE = "video_480p.mp4"  # with --sr --keep-pre-sr: the 480p video before the SR stage
HUD_VIDEO_FILE = "video_hud.mp4"  # with --hud (or `worldplay jobs hud`): video.mp4 with the key HUD drawn on

# --- engines and variants -------------------------------------------------------------------------------

# name -> "module:attribute" of the Engine class in the worker. The CLI only checks names here.
ENGINES: dict[str, str] = {
    "preview": "worker.engines.preview:PreviewEngine",
    "native": "worker.engines.native:NativeEngine",
    "official": "worker.engines.official:OfficialEngine",
}
EXTRA_ENGINES_ENV = "WORLDPLAY_EXTRA_ENGINES"
ENGINES_WITH_SR = ("native", "official")  # the engines that run the 720p super-resolution stage


def engine_table() -> dict[str, str]:
    """Built-in engines plus `WORLDPLAY_EXTRA_ENGINES="name=module:Class,..."` (set by whoever runs the
    worker, never read from Redis; tests use it for engines that misbehave on purpose)."""
    table = dict(ENGINES)
    for item in os.environ.get(EXTRA_ENGINES_ENV, "").split(","):
        name, _, target = item.strip().partition("=")
        if name and ":" in target:
            table[name] = target
    return table


# Steps and guidance per variant (a live view of contract.variants) and the image bucket (contract.buckets).
VARIANT_DEFAULTS = variants.RECIPES


# --- the job spec ---------------------------------------------------------------------------------------

# How the native engine runs its transformer (docs/performance.md). Attention: "auto" is flash-attn where it
# runs, else torch SDPA; "flash" and "sage" (SageAttention) fail the job where they cannot run, never falling
# back. Weights: "default" is the device's dtype (bf16 on CUDA, fp32 on CPU), "fp8" stores the blocks' weights
# in FP8.
AttentionBackend = Literal["auto", "flash", "sdpa", "sage"]
WeightFormat = Literal["default", "fp8"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Deferred(_Model):
    """A model most processes that import this module never validate (a listing reads job rows, not
    specs): its validator is built on first use, not at import."""

    model_config = ConfigDict(defer_build=True)


class RewriteRecord(_Deferred):
    """What prompt rewriting did before the job was enqueued (never the API key)."""

    policy: Literal["best-effort", "required"]
    original: str
    rewritten: str
    changed: bool
    model: str | None = None
    prompt_version: str | None = None
    endpoint: str | None = None
    warning: str | None = None


# A job input is named by a plain file name in its job directory: a spec is data anyone who can enqueue
# can write, and a path (`../x`, `/etc/x`) would make the worker read any file into the outputs.
_INPUT_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _plain_file_name(name: str) -> str:
    if not _INPUT_FILE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain file name in the job directory (letters, digits, '_', '.', '-')")
    return name


def known_engine(engine: str) -> str:
    """A spec's engine must be one this installation knows (`engine_table`)."""
    table = engine_table()
    if engine not in table:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(sorted(table))}")
    return engine


def multiple_of_16(value: int) -> int:
    """Frame sizes are whole latents of whole patches."""
    if value % 16:
        raise ValueError(f"{value} is not a multiple of 16")
    return value


ENGINES_WITH_ATTENTION_WINDOW = ("native",)  # the engines whose AR rollout keeps an attention sink + local window


def attention_window_problem(engine: str, variant: str, sink_latents: int | None, local_window_latents: int | None):
    """Why a job's or a session's attention sink + local window cannot be served (message, hint), or None.
    Both or neither; native engine, autoregressive variant, whole chunks, sink < window (the window spans
    the sink; docs/training.md §9)."""
    if sink_latents is None and local_window_latents is None:
        return None
    flags = "--sink-latents and --local-window-latents"
    chunk = variants.get(variant).chunk_latents
    example = f"e.g. --sink-latents {chunk} --local-window-latents {3 * chunk}"
    if sink_latents is None or local_window_latents is None:
        return (
            f"set both sink_latents and local_window_latents, or neither (got {sink_latents}, {local_window_latents})",
            example,
        )
    if engine not in ENGINES_WITH_ATTENTION_WINDOW:
        return f"engine {engine} keeps no attention window", f"use --engine native, or drop {flags}"
    if variants.get(variant).model_type != "ar":
        return (
            f"variant {variant} is bidirectional; the attention window is for the autoregressive ones",
            f"drop {flags}",
        )
    if variants.get(variant).family_name != "hunyuan":
        # the WAN family's rollout keeps its own context and has no window
        return f"variant {variant} keeps no attention window (the HY-World AR model's)", f"drop {flags}"
    if (
        sink_latents < 0
        or sink_latents % chunk
        or local_window_latents % chunk
        or not sink_latents < local_window_latents
    ):
        return (
            f"sink_latents {sink_latents} and local_window_latents {local_window_latents} must be whole "
            f"{chunk}-latent chunks of variant {variant}, the sink smaller than the window (which spans it)",
            example,
        )
    return None


class ImageRef(_Deferred):
    file: str = "input.png"  # inside the job directory
    source: str  # where the user's image came from (for the manifest; the worker never reads it)
    sha256: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    _file = field_validator("file")(_plain_file_name)


class TrajectoryRef(_Deferred):
    file: str = "trajectory.json"  # official format, inside the job directory
    source: str  # the pose string, preset name or path the user gave
    num_latents: int = Field(gt=0)
    num_frames: int = Field(gt=0)
    sha256: str

    _file = field_validator("file")(_plain_file_name)


class JobSpec(_Deferred):
    """One generation job, fully resolved (no defaults left for the worker to guess)."""

    version: Literal[1] = SCHEMA_VERSION
    kind: Literal["generate"] = "generate"
    prompt: str = ""
    negative_prompt: str = ""
    image: ImageRef | None = None  # None: text-to-video, for a family that makes it (contract.variants.Family)
    trajectory: TrajectoryRef
    engine: str
    variant: Variant
    frames: int = Field(gt=0)
    seed: int = Field(default=1, ge=0, lt=2**32)
    steps: int = Field(ge=1, le=1000)
    guidance: float = Field(ge=0, le=50)
    # A bucket class of `buckets.RESOLUTION_BASE` for a family sized by image buckets, else the frames' short
    # side (`Family.resolution`: "704p" at 1280x704; WAN specs from before that said "480p", read as derived).
    resolution: str = Field(default="480p", pattern=r"^[1-9][0-9]*p$")
    width: int = Field(gt=0, le=4096)
    height: int = Field(gt=0, le=4096)
    fps: int = Field(default=24, ge=1, le=120)
    gpus: int = Field(default=1, ge=1, le=64)
    # Also write video_hud.mp4, the clean video with the trajectory's keys drawn on; video.mp4 is never
    # overlaid (specs of before this field meant "the preview burns the HUD into video.mp4"; they now get
    # the separate HUD video instead).
    hud: bool = False
    # The 720p super-resolution stage after the 480p generation (contract.sr); width/height stay the 480p
    # size, video.mp4 is the SR video, keep_pre_sr keeps the 480p one as video_480p.mp4.
    sr: bool = False
    keep_pre_sr: bool = False
    output_name: str | None = Field(default=None, max_length=120, pattern=r"^[\w.\- ]+$")
    rewrite: RewriteRecord | None = None
    timeout_s: int = Field(gt=0)
    # Paths on the worker host; None means the worker's own setting. A job can only choose among what the
    # worker allows (`model_dir` + `worker.model_dirs`, `official_repo` + `worker.official_repos`).
    model_dir: str | None = None
    memory_profile: MemoryProfile | None = None
    official_repo: str | None = None
    # AR variants on the native engine: each chunk's context is its attention sink and local window (in
    # latents) instead of the reconstituted memory: bounded memory at any length (docs/training.md §9)
    sink_latents: int | None = Field(default=None, ge=0)
    local_window_latents: int | None = Field(default=None, ge=1)
    # The native engine's transformer: torch.compile of its blocks, FP8 block weights, the attention kernel.
    compile: bool = False
    weights: WeightFormat = "default"
    attention_backend: AttentionBackend = "auto"

    _engine = field_validator("engine")(known_engine)
    _size = field_validator("width", "height")(multiple_of_16)

    @model_validator(mode="before")
    @classmethod
    def _derived_resolution(cls, data: Any) -> Any:
        # a family whose frame size is its own (no image buckets) names the size; older specs said "480p"
        if not isinstance(data, dict) or data.get("resolution", "480p") != "480p":
            return data
        record = variants.find(data["variant"]) if isinstance(data.get("variant"), str) else None
        width, height = data.get("width"), data.get("height")
        if record is None or not isinstance(width, int) or not isinstance(height, int):
            return data
        derived = record.family.resolution(width, height)
        return data if derived is None else {**data, "resolution": derived}

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.frames != self.trajectory.num_frames:
            raise ValueError(
                f"frames={self.frames} but the trajectory has {self.trajectory.num_latents} latents "
                f"({self.trajectory.num_frames} frames)"
            )
        record = variants.get(self.variant)
        family = record.family
        if self.image is None and family.image_required:
            raise ValueError(f"variant {self.variant} needs a reference image ({family.title} is image-to-video)")
        if self.image is None and self.engine == "preview":
            raise ValueError("the preview engine re-projects a reference image; give one")
        problem = family.check_size(self.width, self.height)
        if problem is not None:
            raise ValueError(problem)
        derived = family.resolution(self.width, self.height)
        if derived is None and self.resolution not in RESOLUTION_BASE:
            raise ValueError(f"unknown resolution {self.resolution!r}; use one of {', '.join(RESOLUTION_BASE)}")
        if derived is not None and self.resolution != derived:
            raise ValueError(
                f"{family.title} frames of {self.width}x{self.height} are {derived}, not {self.resolution}"
            )
        if self.guidance > 1 and not family.guided:
            raise ValueError(f"{family.title} runs without classifier-free guidance: omit --guidance (or give 1)")
        if self.gpus > 1 and self.engine == "native" and not family.sequence_parallel:
            raise ValueError(f"the native {family.title} pipeline runs on one GPU per job, not {self.gpus}")
        if self.engine == "native" and family.attention_heads % self.gpus:
            # sequence parallel gives every rank an equal share of the attention heads
            degrees = [str(sp) for sp in range(1, family.attention_heads + 1) if family.attention_heads % sp == 0]
            raise ValueError(
                f"{self.gpus} GPUs cannot split the {family.attention_heads} attention heads of {family.title}; "
                f"use --gpus {', '.join(degrees)}"
            )
        chunk = record.chunk_latents
        if self.trajectory.num_latents % chunk:
            raise ValueError(
                f"variant {self.variant} needs a multiple of {chunk} latents, the trajectory has "
                f"{self.trajectory.num_latents}"
            )
        if self.engine != "preview" and not self.prompt.strip():
            raise ValueError(f"engine {self.engine} needs a prompt")
        if self.keep_pre_sr and not self.sr:
            raise ValueError("keep_pre_sr needs sr")
        if self.engine != "native" and (self.compile or self.weights != "default" or self.attention_backend != "auto"):
            raise ValueError("compile, weights and attention_backend are the native engine's; use engine native")
        if self.sr and self.engine not in ENGINES_WITH_SR:
            raise ValueError(f"engine {self.engine} has no super-resolution stage; use {' or '.join(ENGINES_WITH_SR)}")
        if self.sr:
            problem = sr.unsupported(self.variant, self.trajectory.num_latents, self.width, self.height)
            if problem is not None:
                raise ValueError(problem[0])
        problem = attention_window_problem(self.engine, self.variant, self.sink_latents, self.local_window_latents)
        if problem is not None:
            raise ValueError(problem[0])
        return self

    @property
    def video_size(self) -> tuple[int, int]:
        """(width, height) of video.mp4: the 720p bucket of the 480p size with SR, else the size itself."""
        return sr.output_size(self.width, self.height) if self.sr else (self.width, self.height)

    def videos(self) -> dict[str, tuple[int, int]]:
        """Every video file the job writes -> its (width, height); all have `frames` frames."""
        files = {VIDEO_FILE: self.video_size}
        if self.keep_pre_sr:
            files[PRE_SR_VIDEO_FILE] = (self.width, self.height)
        if self.hud:
            files[HUD_VIDEO_FILE] = self.video_size
        return files

    # how `contract.queue.enqueue` puts it on a queue: the task, and a re-run after a lost worker goes first
    # (it has waited its turn once)
    task: ClassVar[str] = TASK_GENERATE
    rerun_first: ClassVar[bool] = True

    def summary(self, queue: str) -> dict:
        """The few spec fields job listings show, kept in `job.meta` so listing never decodes full specs."""
        return {
            "kind": self.kind,
            "engine": self.engine,
            "variant": self.variant,
            "prompt": self.prompt[:120],
            "frames": self.frames,
            "width": self.video_size[0],
            "height": self.video_size[1],
            "output_name": self.output_name,
            "queue": queue,
        }

    def description(self) -> str:
        return f"generate {self.engine}/{self.variant} {self.frames}f: {self.prompt[:60]}"


# --- progress, failures, results ------------------------------------------------------------------------

# parent_failed: a job that depended on another (`enqueue(depends_on=...)`) whose parent did not finish
FailureKind = Literal[
    "bad_input", "engine_error", "oom", "timeout", "worker_lost", "canceled", "refused", "internal", "parent_failed"
]


class Failure(_Model):
    kind: FailureKind
    message: str
    hint: str | None = None


class Progress(_Model):
    """Written to `job.meta["progress"]` by the worker, a few times per second at most."""

    stage: str
    step: int | None = None
    total: int | None = None
    chunk: int | None = None
    num_chunks: int | None = None
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)  # of the whole job
    eta_s: float | None = None
    updated_at: float = Field(default_factory=time.time)

    @field_validator("eta_s")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None


class VideoInfo(_Deferred):
    file: str = VIDEO_FILE
    frames: int
    width: int
    height: int
    fps: float
    bytes: int


class Timings(_Deferred):
    enqueued_at: float | None = None
    started_at: float
    finished_at: float | None = None
    duration_s: float | None = None
    stages: dict[str, float] = Field(default_factory=dict)


class Manifest(_Deferred):
    """`<output root>/<job id>/manifest.json`: everything needed to understand or reproduce the run."""

    version: Literal[1] = SCHEMA_VERSION
    job_id: str
    status: Literal["running", "finished", "failed", "stopped"]
    attempt: int = Field(ge=1)
    execution_id: str
    queue: str
    worker: str
    spec: JobSpec
    settings: dict[str, Any]
    versions: dict[str, str]
    engine: dict[str, Any]
    host: dict[str, Any]
    gpu: dict[str, Any] | None = None
    timings: Timings
    video: VideoInfo | None = None
    # the job's other videos (video_480p.mp4, video_hud.mp4), added to version 1 (absent = none)
    videos: list[VideoInfo] = Field(default_factory=list)
    failure: Failure | None = None
