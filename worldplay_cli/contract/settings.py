"""One settings object for the whole tool.

Precedence, highest first: explicit overrides (command-line flags) > environment (`WORLDPLAY_*`, nested
keys joined by `__`, e.g. `WORLDPLAY_REWRITE__I2V__BASE_URL`; plus the official rewrite variables) >
the config file (`~/.config/worldplay/config.toml`, or `WORLDPLAY_CONFIG`) > defaults.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput, WorldplayError, first_error

SETTINGS_VERSION = 1
ENV_PREFIX = "WORLDPLAY_"

Engine = Literal["preview", "native", "official"]
Variant = Annotated[str, AfterValidator(variants.check_name)]  # a name in contract.variants
MemoryProfile = Literal["auto", "resident", "offload", "group-offload", "low-vram"]


def _data_dir() -> Path:
    if os.environ.get("WORLDPLAY_HOME"):
        return Path(os.environ["WORLDPLAY_HOME"])
    from platformdirs import user_data_dir

    return Path(user_data_dir("worldplay"))


def default_config_path() -> Path:
    if os.environ.get("WORLDPLAY_CONFIG"):
        return Path(os.environ["WORLDPLAY_CONFIG"])
    from platformdirs import user_config_dir

    return Path(user_config_dir("worldplay")) / "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RewriteEndpoint(_Section):
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)


class RewriteSettings(_Section):
    t2v: RewriteEndpoint = Field(default_factory=RewriteEndpoint)
    i2v: RewriteEndpoint = Field(default_factory=RewriteEndpoint)
    max_image_size: int = Field(default=1024, gt=0)
    system_prompt_file: Path | None = None


class ServerSettings(_Section):
    """The embedded redis-server worldplay manages when no `redis_url` is configured."""

    data_dir: Path = Field(default_factory=lambda: _data_dir() / "redis")
    port: int | None = Field(default=None, ge=0, le=65535)


# The one rule for queue names (settings, `generate --queue`, `worker --queue`, `train --queue-name`, ...):
# they become Redis keys (`rq:queue:<name>`) and appear in commands people copy.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
QUEUE_NAME_HINT = "a queue name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def check_queue_name(name: str, option: str = "--queue") -> str:
    """`name` if it is a valid queue name, else a BadInput naming `option`."""
    import re

    if not isinstance(name, str) or not re.fullmatch(QUEUE_NAME_PATTERN, name):
        raise BadInput(f"{option} {name!r} is not a valid queue name", QUEUE_NAME_HINT)
    return name


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_URL_HINT = "use a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0"


def redis_url_problem(url: str) -> str | None:
    """Why `url` is no Redis URL worldplay accepts (None if it is one)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not url.startswith(REDIS_URL_SCHEMES):
        return f"unsupported scheme {scheme + '://'!r}" if scheme else "it has no scheme"
    if any(ch.isspace() for ch in url):
        return "it contains white space"
    return None


class QueueSettings(_Section):
    """How jobs are enqueued: where, and how long their records stay in Redis."""

    default_queue: str = Field(default="generate", pattern=QUEUE_NAME_PATTERN)
    # Finished/failed job records (spec, meta, result) stay this long; videos stay on disk regardless.
    finished_ttl_s: int = Field(default=30 * 86400, gt=0)
    failed_ttl_s: int = Field(default=30 * 86400, gt=0)
    # A job whose worker vanished is re-queued this many times, then failed with the reason.
    retries_on_lost_worker: int = Field(default=1, ge=0, le=10)


class WorkerSettings(_Section):
    """Liveness and shutdown timing of `worldplay worker` (see docs/queue-and-workers.md for the bounds)."""

    heartbeat_s: int = Field(default=5, ge=1, le=60)
    # A started job whose worker has not heartbeated for this long is declared lost.
    lost_after_s: int = Field(default=20, ge=3, le=3600)
    # How often a live worker sweeps every queue for lost jobs.
    reaper_interval_s: int = Field(default=5, ge=1, le=600)
    # Cancel/timeout: SIGTERM the job's processes, wait this long, then SIGKILL what is left.
    kill_grace_s: float = Field(default=10.0, ge=0, le=600)
    # SIGTERM to a worker: let the running job finish for this long, then stop and re-queue it.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    log_stream_maxlen: int = Field(default=500, ge=10)
    # What a job may name (docs/queue-and-workers.md, "Trust model"): besides the top-level `model_dir` and
    # `official_repo`, only these. Anyone who can enqueue chooses among them, never beyond: the official
    # engine executes its checkout, and a model directory is loaded by code that may unpickle.
    model_dirs: list[Path] = Field(default_factory=list)
    official_repos: list[Path] = Field(default_factory=list)

    @field_validator("model_dirs", "official_repos", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        # environment variables and `config set` give one string: PATH-style, `:`-separated
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value


class LimitsSettings(_Section):
    """Sizes refused as bad input before anything is allocated (see docs/trajectories.md, "Limits")."""

    # Latents per trajectory: 2048 latents are 8189 frames (about 5.7 minutes at 24 fps).
    max_latents: int = Field(default=2048, ge=1, le=1_000_000)
    # Bytes per trajectory file, checked before it is read (a 2048-latent official JSON is about 1.6 MB).
    max_trajectory_bytes: int = Field(default=16 * 1024 * 1024, ge=1)


class Settings(_Section):
    version: int = SETTINGS_VERSION
    redis_url: str | None = None
    output_root: Path = Field(default_factory=lambda: _data_dir() / "outputs")
    # Permissions of job directories and their files (OUTPUT_MODES); `shared` lets group and others read.
    output_mode: Literal["private", "shared"] = "private"
    model_dir: Path = Field(default_factory=lambda: _data_dir() / "models" / "HunyuanVideo-1.5")
    default_engine: Engine = "preview"
    default_variant: Variant = variants.DEFAULT
    job_timeout_s: int = Field(default=6 * 3600, gt=0)
    # Native engine: how weights are placed on the GPU (see docs/multi-gpu.md).
    memory_profile: MemoryProfile = "auto"
    # Official engine: a HY-WorldPlay checkout on the worker host.
    official_repo: Path | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    rewrite: RewriteSettings = Field(default_factory=RewriteSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, url: str | None) -> str | None:
        problem = url and redis_url_problem(url)
        if problem:
            raise ValueError(f"{problem}; {REDIS_URL_HINT}")
        return url

    @model_validator(mode="after")
    def _liveness_is_consistent(self) -> Settings:
        if self.worker.lost_after_s < 2 * self.worker.heartbeat_s:
            raise ValueError("worker.lost_after_s must be at least twice worker.heartbeat_s")
        return self


# The official pipeline's rewrite variables, honoured so existing setups keep working.
OFFICIAL_ENV = {
    "T2V_REWRITE_BASE_URL": ("rewrite", "t2v", "base_url"),
    "T2V_REWRITE_MODEL_NAME": ("rewrite", "t2v", "model"),
    "I2V_REWRITE_BASE_URL": ("rewrite", "i2v", "base_url"),
    "I2V_REWRITE_MODEL_NAME": ("rewrite", "i2v", "model"),
    "I2V_REWRITE_MAX_IMAGE_SIZE": ("rewrite", "max_image_size"),
}


def _set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = tree.get(key)
        if not isinstance(node, dict):
            node = tree[key] = {}
        tree = node
    tree[path[-1]] = value


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def toml_parser():
    """The TOML reader module (imported on first use: most commands read no TOML file)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def read_config_file(path: Path) -> dict:
    if not path.exists():
        return {}
    toml = toml_parser()
    try:
        return toml.loads(path.read_text())
    except (OSError, toml.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read config file {path}: {exc}", "fix or delete the file") from None


def env_layer(environ: dict[str, str] | None = None) -> dict:
    environ = os.environ if environ is None else environ
    layer: dict = {}
    for name, path in OFFICIAL_ENV.items():
        if environ.get(name):
            _set_path(layer, path, environ[name])
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        # WORLDPLAY_* names whose first part is no setting are process plumbing (WORLDPLAY_RUN,
        # WORLDPLAY_DEBUG, ...) and are read elsewhere; below a known section, unknown keys still fail.
        if path[0] in Settings.model_fields:
            _set_path(layer, path, value)
    return layer


def load_settings(
    overrides: dict | None = None, config_path: Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Build the settings from defaults < config file < environment < `overrides` (flags; None values ignored)."""
    path = config_path or default_config_path()
    layers = [read_config_file(path), env_layer(environ), _drop_none(overrides or {})]
    data: dict = {}
    for layer in layers:
        data = _merge(data, layer)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise BadInput(
            f"invalid setting {first_error(exc)}",
            f"check {path}, WORLDPLAY_* environment variables and flags",
        ) from None
    apply_limits(settings)
    return settings


def apply_limits(settings: Settings) -> None:
    """Make the `limits.*` settings the limits the trajectories package checks."""
    from trajectories.limits import configure

    configure(settings.limits.max_latents, settings.limits.max_trajectory_bytes)


def _drop_none(tree: dict) -> dict:
    return {
        key: _drop_none(value) if isinstance(value, dict) else value for key, value in tree.items() if value is not None
    }


def settings_to_dict(settings: Settings, reveal_secrets: bool = False) -> dict:
    """A JSON-able view; secrets masked unless asked (never for logs, specs or manifests)."""
    data = settings.model_dump(mode="json")
    if not reveal_secrets:
        for kind in ("t2v", "i2v"):
            if data["rewrite"][kind]["api_key"]:
                data["rewrite"][kind]["api_key"] = "********"
        if data["redis_url"]:
            data["redis_url"] = mask_url(data["redis_url"])
    return data


def mask_url(url: str) -> str:
    """The URL with its password (in the userinfo or a `password=` query parameter) replaced by `****`."""
    import re

    url = re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:****@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1****", url)


def set_config_value(path: Path, key: str, value: str) -> Any:
    """Set dotted `key` to `value` in the config file at `path`, typed and checked like every setting.

    Returns the stored value. The file is written 0600 (it may hold API keys) and atomically.
    """
    import tomli_w

    keys = tuple(part for part in key.split(".") if part)
    if not keys:
        raise BadInput("empty setting name", "use a dotted key such as worker.heartbeat_s")
    data = read_config_file(path)
    _set_path(data, keys, value)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise BadInput(
            f"invalid setting {first_error(exc, key)}", "see `worldplay config show` for the names"
        ) from None
    node: Any = settings
    for part in keys:
        node = getattr(node, part)
    typed = node.get_secret_value() if isinstance(node, SecretStr) else node
    stored = (
        str(typed) if isinstance(typed, Path) else [str(item) for item in typed] if isinstance(typed, list) else typed
    )
    _set_path(data, keys, stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump(data, handle)
    os.replace(tmp, path)
    return stored


# --- files and directories worldplay creates ------------------------------------------------------------

# Job directory modes. A job's files take their directory's read/write bits (`job_file_mode`), so what
# a worker on another host writes matches what the submitting CLI chose, and never more than that.
OUTPUT_MODES = {"private": 0o700, "shared": 0o755}


def create_job_dir(path: Path, settings: Settings) -> None:
    """Create a job directory (never an existing one) with the `output_mode`, whatever the umask."""
    mode = OUTPUT_MODES[settings.output_mode]
    path.mkdir(mode=mode)
    path.chmod(mode)  # mkdir's mode is narrowed by the umask


def job_file_mode(directory: Path) -> int:
    """Mode for a file created in `directory`: its read/write bits, never executable nor group/world writable."""
    return stat.S_IMODE(directory.stat().st_mode) & 0o644


def open_job_file(path: Path, flags: int) -> int:
    """`os.open` (creating) a file in a job directory with `job_file_mode` (the umask may only have
    narrowed it; a file another user created is left as it is)."""
    mode = job_file_mode(path.parent)
    fd = os.open(path, flags | os.O_CREAT, mode)
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        with suppress(PermissionError):
            os.fchmod(fd, mode)
    return fd


def write_job_file(path: Path, data: bytes) -> None:
    """A new file in a job directory (never replacing one), with `job_file_mode`."""
    with os.fdopen(open_job_file(path, os.O_WRONLY | os.O_EXCL), "wb") as handle:
        handle.write(data)


def runtime_dir(create: bool = True) -> Path:
    """`$TMPDIR/worldplay-<uid>`: resident-runtime sockets and the Redis socket when the data dir is too
    deep for one. In a shared /tmp anyone could have made it first (and then swap sockets), so it is
    created 0700 and refused unless it is a real directory of ours that no one else can write to."""
    directory = Path(tempfile.gettempdir()) / f"worldplay-{os.getuid()}"
    if not create:
        return directory
    with suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symlink or file)"
    elif info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    elif info.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise WorldplayError(
            f"runtime directory {directory} {problem}; refusing to use it for sockets",
            "remove it so worldplay re-creates it private (0700), or point TMPDIR at a private directory",
        )
    return directory
