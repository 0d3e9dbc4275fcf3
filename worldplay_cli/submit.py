"""From user input to a job on the queue: resolve, validate, store the inputs, enqueue.

`submit_generation` is the one way in: `worldplay generate`, the dashboard's submit form and spec files,
and the trajectory editor all call it (the editor passes its `Trajectory` object, never a file).

One vocabulary from the command line to the worker: a `worldplay generate` option `--x-y` is the
`GenerateRequest` field and the `JobSpec` field `x_y`, with two exceptions kept for users' sake:
`--name` is `output_name` and `--timeout` is `timeout_s` (`OPTION_FOR_FIELD`). The worker's
`GenerationOptions` (`worker/pipeline/pipeline.py`) says `steps` and `guidance` too.

Every check runs before anything is written or enqueued, so a bad request leaves no trace: a missing or
undecodable image, an invalid trajectory, a frame count the variant cannot make, an unknown engine or
variant, an unwritable output root, an unreachable Redis each give a one-line error (exit 2 or 1).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.contract.settings import OUTPUT_MODES, create_job_dir, write_job_file
from worldplay_cli.contract.specs import (
    RESOLUTION_BASE,
    VARIANT_DEFAULTS,
    ImageRef,
    JobSpec,
    RewriteRecord,
    TrajectoryRef,
    bucket_size,
    engine_table,
)

if TYPE_CHECKING:
    from redis import Redis

    from trajectories import Trajectory
    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.queue import QueuedSpec
    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.contract.variants import Family

DEFAULT_POSE = "walk-and-turn"


def image_path_for(image: str | Path | None) -> Path:
    """The reference image: a path, or the name of a bundled example (`meadow`, `city`; default `meadow`)."""
    from worldplay_cli.assets import EXAMPLE_IMAGE, EXAMPLE_IMAGES

    if image is None:
        return EXAMPLE_IMAGE
    if str(image) in EXAMPLE_IMAGES and not Path(image).exists():
        return EXAMPLE_IMAGES[str(image)]
    return Path(image).expanduser()


@dataclass
class RenderRequest:
    """What a generation and a live session are both asked for; None means "use the default" (settings,
    variant recipe, image bucket)."""

    prompt: str = ""
    image: Path | None = None
    engine: str | None = None
    variant: str | None = None
    seed: int = 1
    steps: int | None = None
    guidance: float | None = None
    resolution: str = "480p"
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""
    timeout_s: int | None = None
    model_dir: Path | None = None
    memory_profile: str | None = None
    sink_latents: int | None = None
    local_window_latents: int | None = None

    def check_attention_window(self, engine: str, variant: str) -> dict[str, int | None]:
        """The spec fields of the attention window, or a one-line error with a hint."""
        from worldplay_cli.contract.specs import attention_window_problem

        problem = attention_window_problem(engine, variant, self.sink_latents, self.local_window_latents)
        if problem is not None:
            raise BadInput(*problem)
        return {"sink_latents": self.sink_latents, "local_window_latents": self.local_window_latents}


@dataclass
class GenerateRequest(RenderRequest):
    """A generation as asked for. `pose` is a pose string, preset name or trajectory file; with a
    `Trajectory` passed to `prepare` it is only the label the job records as that trajectory's source."""

    pose: str = DEFAULT_POSE
    frames: int | None = None
    gpus: int = 1
    output_name: str | None = None
    hud: bool = False
    sr: bool = False
    keep_pre_sr: bool = False
    rewrite: Literal["best-effort", "required"] | None = None
    official_repo: Path | None = None
    compile: bool = False
    weights: str = "default"
    attention_backend: str = "auto"


@dataclass
class PreparedJob:
    """A validated spec plus the input bytes that go into the job directory."""

    spec: JobSpec
    image_png: bytes | None  # None: a text-to-video job
    trajectory_json: bytes

    def with_rewrite(self, record: RewriteRecord) -> PreparedJob:
        spec = self.spec.model_copy(update={"prompt": record.rewritten, "rewrite": record})
        return PreparedJob(JobSpec.model_validate(spec.model_dump()), self.image_png, self.trajectory_json)


# Reference images are resized to ~0.4 megapixels; anything above this is refused before it is decoded
# (a PNG of a few KB can claim 30000x30000 pixels: a decompression bomb).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_IMAGE_SIZE_HINT = f"use an image of at most {MAX_IMAGE_PIXELS // 1024 // 1024} megapixels (e.g. 8192x8192)"


def check_image_pixels(width: int, height: int, path: Path) -> None:
    """Refuse an image too large to decode (its header's size, checked before decoding)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise BadInput(f"image {path} is {width}x{height} pixels, too many to decode", _IMAGE_SIZE_HINT)


def _load_image(path: Path) -> tuple[bytes, int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise BadInput(f"image not found: {path}", "check the path given to --image")
    if not path.is_file():
        raise BadInput(f"image is not a file: {path}", "give the path of a PNG or JPEG file to --image")
    try:
        with Image.open(path) as image:
            check_image_pixels(image.width, image.height, path)  # from the header, before decoding
            image.load()
            rgb = image.convert("RGB")
    except PermissionError:
        raise BadInput(f"cannot read image {path}: permission denied", "check the file's permissions") from None
    except Image.DecompressionBombError:
        raise BadInput(f"image {path} has too many pixels to decode safely", _IMAGE_SIZE_HINT) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"cannot decode image {path}: {message}", "use a PNG or JPEG file") from None
    if min(rgb.size) < 16:
        raise BadInput(
            f"image {path} is {rgb.width}x{rgb.height}; it must be at least 16 pixels on each side",
            "use a larger image",
        )
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), rgb.width, rgb.height


def _size(
    request: RenderRequest, image_width: int | None, image_height: int | None, family: Family | None = None
) -> tuple[int, int]:
    """The frame size: --width/--height, else the family's default size, else the image's bucket."""
    if (request.width is None) != (request.height is None):
        raise BadInput("give both --width and --height, or neither", "omit both to use the image's aspect ratio")
    if request.width is None and family is not None and family.default_size is not None:
        return family.default_size
    if request.width is None:
        return bucket_size(image_width, image_height, request.resolution)
    for name, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % 16:
            raise BadInput(
                f"--{name} {value} must be a positive multiple of 16", f"e.g. --{name} {max(16, value // 16 * 16)}"
            )
    return request.width, request.height


def prepare(request: GenerateRequest, settings: Settings, trajectory: Trajectory | None = None) -> PreparedJob:
    """Resolve and validate everything; touches neither Redis nor the output root.

    `trajectory`: an already built trajectory (the editor's) used as it is; `request.pose` then only
    names its source in the spec. Without one, `request.pose` is resolved."""
    from trajectories import resolve

    engine = request.engine or settings.default_engine
    engines = engine_table()
    if engine not in engines:
        raise BadInput(f"unknown engine {engine!r}", f"use one of: {', '.join(sorted(engines))}")
    variant = request.variant or settings.default_variant
    if variant not in VARIANT_DEFAULTS:
        raise BadInput(f"unknown variant {variant!r}", f"use one of: {', '.join(VARIANT_DEFAULTS)}")
    if request.resolution not in RESOLUTION_BASE:
        raise BadInput(
            f"unknown resolution {request.resolution!r}",
            f"use one of: {', '.join(RESOLUTION_BASE)} (the released model is 480p)",
        )
    family = variants.get(variant).family
    image_path = image_png = image_width = image_height = None  # text-to-video without an image
    if request.image is None and not family.image_required and engine == "preview":
        raise BadInput(
            "the preview engine re-projects a reference image; without --image there is none",
            "give --image, or generate text-to-video with --engine native",
        )
    if request.image is not None or family.image_required:
        image_path = image_path_for(request.image)
        image_png, image_width, image_height = _load_image(image_path)

    if trajectory is None:
        trajectory = resolve(request.pose)
    report = trajectory.validate(variant, request.frames)
    if not report.ok:
        fixes = "; ".join(f"{s.description} ({s.num_frames} frames)" for s in report.suggestions)
        if not fixes and request.frames is not None:
            fixes = f"this trajectory makes {trajectory.num_frames} frames; omit --frames or change --pose"
        raise BadInput(
            f"trajectory {_shortened(request.pose)!r}: {report.problems[0]}",
            fixes or f"check it with `worldplay traj validate --variant {variant}`",
        )
    trajectory_json = json.dumps(trajectory.to_official_json(), indent=2).encode()

    width, height = _size(request, image_width, image_height, family)
    problem = family.check_size(width, height)
    if problem is not None:
        size = f"--width {family.default_size[0]} --height {family.default_size[1]}" if family.default_size else ""
        raise BadInput(problem, f"e.g. {size}" if size else f"use multiples of {family.size_multiple}")
    if request.sr or request.keep_pre_sr:
        _check_super_resolution(request, settings, engine, variant, trajectory.num_latents, width, height)
    window = request.check_attention_window(engine, variant)
    defaults = VARIANT_DEFAULTS[variant]
    try:
        spec = JobSpec(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            image=ImageRef(
                source=str(image_path.resolve()),
                sha256=hashlib.sha256(image_png).hexdigest(),
                width=image_width,
                height=image_height,
            )
            if image_png is not None
            else None,
            trajectory=TrajectoryRef(
                source=request.pose,
                num_latents=trajectory.num_latents,
                num_frames=trajectory.num_frames,
                sha256=hashlib.sha256(trajectory_json).hexdigest(),
            ),
            engine=engine,
            variant=variant,
            frames=trajectory.num_frames,
            seed=request.seed,
            steps=request.steps if request.steps is not None else defaults["steps"],
            guidance=request.guidance if request.guidance is not None else defaults["guidance"],
            resolution=family.resolution(width, height) or request.resolution,
            width=width,
            height=height,
            gpus=request.gpus,
            hud=request.hud,
            sr=request.sr,
            keep_pre_sr=request.keep_pre_sr,
            output_name=request.output_name,
            timeout_s=request.timeout_s if request.timeout_s is not None else settings.job_timeout_s,
            model_dir=str(request.model_dir) if request.model_dir else None,
            memory_profile=request.memory_profile,
            official_repo=str(request.official_repo) if request.official_repo else None,
            compile=request.compile,
            weights=request.weights,
            attention_backend=request.attention_backend,
            **window,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "string_pattern_mismatch":
            message = "use only letters, digits, spaces, '.', '_' and '-'"
        field = str(first["loc"][0]) if first["loc"] else ""
        if field in OPTION_FOR_FIELD or field in GenerateRequest.__dataclass_fields__:
            option = OPTION_FOR_FIELD.get(field, "--" + field.replace("_", "-"))
            raise BadInput(
                f"{option} {first.get('input')!r}: {message}", f"see `worldplay generate --help` for {option}"
            ) from None
        raise BadInput(
            f"{'.'.join(map(str, first['loc']))}: {message}" if field else message, "see `worldplay generate --help`"
        ) from None
    return PreparedJob(spec, image_png, trajectory_json)


def _check_super_resolution(
    request: GenerateRequest, settings: Settings, engine: str, variant: str, num_latents: int, width: int, height: int
) -> None:
    """`--sr` the stage cannot serve, or whose weights a model directory on this host lacks: one line, with
    what would work, before anything is enqueued (a worker's directory elsewhere is checked by the worker)."""
    from worldplay_cli.contract import layout, sr
    from worldplay_cli.contract.specs import ENGINES_WITH_SR

    if not request.sr:
        raise BadInput("--keep-pre-sr keeps the 480p video of the super-resolution stage", "add --sr")
    if engine not in ENGINES_WITH_SR:
        raise BadInput(
            f"engine {engine} has no super-resolution stage",
            f"use --engine {' or '.join(ENGINES_WITH_SR)} with --sr, or drop --sr",
        )
    problem = sr.unsupported(variant, num_latents, width, height)
    if problem is not None:
        raise BadInput(*problem)
    model_dir = request.model_dir or settings.model_dir
    if model_dir is not None and Path(model_dir).expanduser().is_dir():
        model_dir = Path(model_dir).expanduser()
        missing = [path for path in layout.SR_FILES if not (model_dir / path).is_file()]
        if missing:
            raise BadInput(
                f"the 720p super-resolution weights are not in {model_dir} (no {missing[0]})",
                f"run `worldplay download {sr.DOWNLOAD_PIECE} --model-dir {model_dir}`, or drop --sr",
            )


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Request/spec fields whose `worldplay generate` option is not simply `--<field>` (kept short for users).
OPTION_FOR_FIELD = {"timeout_s": "--timeout", "output_name": "--name"}


def check_output_root(settings: Settings) -> Path:
    """The output root exists (or can be created) and is writable; a one-line error otherwise."""
    root = Path(settings.output_root).expanduser()
    try:
        # a root made here gets the output mode; an existing one is the user's business
        root.mkdir(parents=True, exist_ok=True, mode=OUTPUT_MODES[settings.output_mode])
    except OSError as exc:
        raise BadInput(
            f"cannot create output root {root}: {exc.strerror}", "set output_root to a writable directory"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise BadInput(
            f"output root {root} is not writable", "set output_root (or --output-root) to a writable directory"
        )
    return root


def write_inputs(settings: Settings, job_id: str, prepared: PreparedJob) -> Path:
    """Create `<output root>/<job id>/` (never an existing one) with the job's inputs."""
    spec = prepared.spec
    return write_job_dir(
        settings,
        job_id,
        {spec.trajectory.file: prepared.trajectory_json}
        | ({spec.image.file: prepared.image_png} if spec.image is not None else {}),
        spec.model_dump_json(indent=2).encode(),
    )


def write_job_dir(settings: Settings, job_id: str, inputs: dict[str, bytes], spec_json: bytes) -> Path:
    """Create `<output root>/<job id>/` (never an existing one) with `inputs` (file name -> bytes) and spec.json."""
    directory = Path(settings.output_root).expanduser() / job_id
    try:
        create_job_dir(directory, settings)
        for name, data in inputs.items():
            write_job_file(directory / name, data)
        write_job_file(directory / "spec.json", spec_json)
    except FileExistsError:
        raise WorldplayError(f"output directory {directory} already exists; outputs are never overwritten") from None
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise BadInput(f"cannot write job inputs to {directory}: {exc.strerror}") from None
    return directory


def submit(
    conn: Redis,
    settings: Settings,
    prepared: PreparedJob,
    queue_name: str,
    job_id: str,
    retries_on_lost: int | None = None,
    batch: str | None = None,
):
    """Write the inputs and enqueue; if enqueueing fails, remove the directory again."""
    directory = write_inputs(settings, job_id, prepared)
    return enqueue_or_remove(conn, settings, prepared.spec, directory, queue_name, retries_on_lost, batch=batch)


def enqueue_or_remove(
    conn: Redis,
    settings: Settings,
    spec: QueuedSpec,
    directory: Path,
    queue_name: str,
    retries_on_lost: int | None,
    depends_on: list[str] | None = None,
    batch: str | None = None,
):
    """Enqueue the job of `directory` (after `depends_on`, in `batch`: see `contract.queue.enqueue`); if that
    fails, remove the directory again."""
    import redis

    from worldplay_cli.contract.queue import enqueue

    try:
        return enqueue(conn, settings, spec, directory.name, queue_name, retries_on_lost, depends_on, batch)
    except redis.RedisError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise WorldplayError(f"could not enqueue the job: {exc}") from None


@dataclass(frozen=True)
class Submitted:
    job_id: str
    queue: str
    # No live worker serves the queue: the one-line warning with the command that starts one.
    warning: str | None = None


def submit_generation(
    request: GenerateRequest | PreparedJob,
    settings: Settings,
    conn: Redis,
    queue: str | None = None,
    *,
    trajectory: Trajectory | None = None,
    job_id: str | None = None,
    retries_on_lost: int | None = None,
    check_served: bool = True,
    batch: str | None = None,
) -> Submitted:
    """The one way a generation job gets on a queue: prepare (unless given a `PreparedJob`), check the
    output root, make the job id (with the request's `output_name` in it), write the inputs, enqueue on
    `queue` (default: the settings' queue) and, with `check_served`, warn when no live worker serves it.

    `trajectory`: see `prepare`; `job_id`: one made by the caller (`new_job_id`); `batch`: the batch id it
    belongs to (`worldplay_cli.batch`). Blocking (Redis, files): a terminal app calls it from a thread worker.
    Raises BadInput/WorldplayError/TrajectoryError, and redis errors (other than on enqueueing) as they are.
    """
    from worldplay_cli.contract.specs import new_job_id

    prepared = request if isinstance(request, PreparedJob) else prepare(request, settings, trajectory)
    check_output_root(settings)
    queue_name = queue or settings.queue.default_queue
    job_id = job_id or new_job_id(prepared.spec.output_name)
    submit(conn, settings, prepared, queue_name, job_id, retries_on_lost, batch)
    return Submitted(job_id, queue_name, queue_warning(conn, settings, queue_name) if check_served else None)


def queue_warning(conn: Redis, settings: Settings, queue: str) -> str | None:
    """`unserved_queue_warning`, except that a Redis error here gives no warning: the job is already
    enqueued, and a hint that cannot be computed must not turn that into a failure."""
    import redis

    from worldplay_cli.rows import unserved_queue_warning

    try:
        return unserved_queue_warning(conn, settings, queue)
    except redis.RedisError:
        return None


# --- live play sessions ---------------------------------------------------------------------------------


@dataclass
class PlayRequest(RenderRequest):
    """A `worldplay play` session as asked for. The engine defaults to the settings' when it can play, else
    preview; the variant likewise (an autoregressive one)."""

    max_chunks: int | None = None
    idle_timeout_s: float | None = None
    ahead_chunks: int | None = None
    jpeg_quality: int | None = None
    name: str | None = None  # only for the job id, as `--name` for a generation


PLAY_ENGINES = ("preview", "native")


def prepare_play(request: PlayRequest, settings: Settings) -> tuple[PlaySpec, bytes | None]:
    """Resolve and validate a session (its spec and the image's PNG bytes); touches neither Redis nor disk.
    No image on the native engine for a family that needs none: text-to-video (no bytes)."""
    from worldplay_cli.contract.play import PlaySpec

    engine = request.engine or (settings.default_engine if settings.default_engine in PLAY_ENGINES else "preview")
    if engine not in PLAY_ENGINES:
        raise BadInput(f"engine {engine!r} cannot play live", f"use one of: {', '.join(PLAY_ENGINES)}")
    autoregressive = [record.name for record in variants.all_variants() if record.plays_live]
    default_variant = settings.default_variant if settings.default_variant in autoregressive else autoregressive[0]
    variant = request.variant or default_variant
    if variant not in autoregressive:
        raise BadInput(
            f"variant {variant!r} cannot play live", f"use an autoregressive one: {', '.join(autoregressive)}"
        )
    if request.resolution not in RESOLUTION_BASE:
        raise BadInput(f"unknown resolution {request.resolution!r}", f"use one of: {', '.join(RESOLUTION_BASE)}")
    family = variants.get(variant).family
    image_png, image_width, image_height, image = None, None, None, None
    if request.image is not None or family.image_required or engine == "preview":
        image_path = image_path_for(request.image)
        image_png, image_width, image_height = _load_image(image_path)
        image = ImageRef(
            source=str(image_path.resolve()),
            sha256=hashlib.sha256(image_png).hexdigest(),
            width=image_width,
            height=image_height,
        )
    width, height = _size(request, image_width, image_height, family)
    window = request.check_attention_window(engine, variant)
    defaults = VARIANT_DEFAULTS[variant]
    optional = {
        name: getattr(request, name)
        for name in ("max_chunks", "idle_timeout_s", "ahead_chunks", "jpeg_quality")
        if getattr(request, name) is not None
    }
    try:
        spec = PlaySpec(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            image=image,
            engine=engine,
            variant=variant,
            seed=request.seed,
            steps=request.steps if request.steps is not None else defaults["steps"],
            guidance=request.guidance if request.guidance is not None else defaults["guidance"],
            width=width,
            height=height,
            timeout_s=request.timeout_s if request.timeout_s is not None else settings.job_timeout_s,
            model_dir=str(request.model_dir) if request.model_dir else None,
            memory_profile=request.memory_profile,
            **window,
            **optional,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        field = ".".join(map(str, first["loc"]))
        raise BadInput(f"{field}: {message}" if field else message, "see `worldplay play --help`") from None
    return spec, image_png


def submit_play(
    request: PlayRequest,
    settings: Settings,
    conn: Redis,
    queue: str | None = None,
    *,
    job_id: str | None = None,
    check_served: bool = True,
) -> Submitted:
    """Put a live session on `queue` (default `contract.play.PLAY_QUEUE`): prepare, check the output root,
    write the job directory (input.png, spec.json) and the image into Redis as well (a worker on another
    host without this output root takes it from there), enqueue `worker.tasks.play` never to be re-run after a
    lost worker, and with `check_served` warn when no live worker serves the queue. The player then talks
    to the worker over `contract.play.PlayChannel(conn, submitted.job_id)`. Raises as `submit_generation`."""
    from worldplay_cli.contract.play import PLAY_QUEUE, PlayChannel
    from worldplay_cli.contract.specs import new_job_id

    spec, image_png = prepare_play(request, settings)
    check_output_root(settings)
    queue_name = queue or PLAY_QUEUE
    job_id = job_id or new_job_id(request.name or "play")
    inputs = {spec.image.file: image_png} if spec.image is not None else {}
    directory = write_job_dir(settings, job_id, inputs, spec.model_dump_json(indent=2).encode())
    if image_png is not None:
        PlayChannel(conn, job_id).put_image(image_png)
    enqueue_or_remove(conn, settings, spec, directory, queue_name, retries_on_lost=0)
    return Submitted(job_id, queue_name, queue_warning(conn, settings, queue_name) if check_served else None)
