"""Engines: what actually turns a job spec into a video. The worker picks one per job by name.

An engine is a class with a `name`, a `uses_gpu` flag and `run(spec, inputs, out_dir, reporter)`, which
writes `out_dir/video.mp4` and returns an `EngineResult`. The runner owns everything around it (job
directory, manifest, fencing, committing the video, failures); an engine only renders and reports.
Names map to classes in `worldplay_cli.contract.specs.ENGINES` (plus `WORLDPLAY_EXTRA_ENGINES`), so the CLI can
validate a name without importing the worker.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from worldplay_cli.contract.specs import JobSpec, engine_table

if TYPE_CHECKING:
    import numpy as np
    from trajectories import Trajectory

    from worker.progress import Reporter


class InputError(Exception):
    """The job's inputs on disk are missing or do not match the spec."""


@dataclass(frozen=True)
class JobInputs:
    """The inputs the CLI stored in the job directory at enqueue time."""

    job_dir: Path
    spec: JobSpec

    @property
    def image_path(self) -> Path:
        return self._inside("image.file", self.spec.image.file)

    @property
    def trajectory_path(self) -> Path:
        return self._inside("trajectory.file", self.spec.trajectory.file)

    def _inside(self, field_name: str, name: str) -> Path:
        """The input as a real path, refused unless it is in the job directory: the schema already allows
        only plain names, but a symlink in the directory could still point anywhere on this host."""
        directory = self.job_dir.resolve()
        path = (directory / name).resolve()
        if path.parent != directory:
            _refuse(
                f"job input {field_name} {name!r} resolves to {path}, outside the job directory",
                "job inputs are files in the job directory; submit jobs with `worldplay generate`",
            )
        return path

    def verify(self) -> None:
        for path, expected in ((self.image_path, self.spec.image.sha256), (self.trajectory_path, self.spec.trajectory.sha256)):
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise InputError(f"cannot read job input {path}: {exc.strerror}") from None
            if digest != expected:
                raise InputError(f"job input {path} changed since the job was enqueued (checksum mismatch)")

    def load_image(self) -> np.ndarray:
        import numpy as np
        from PIL import Image

        with Image.open(self.image_path) as image:
            return np.asarray(image.convert("RGB"))

    def load_trajectory(self) -> Trajectory:
        from trajectories import Trajectory

        return Trajectory.load(self.trajectory_path)


@dataclass
class EngineResult:
    video: Path
    info: dict[str, Any] = field(default_factory=dict)  # engine-specific facts for the manifest


class Engine(Protocol):
    name: str
    uses_gpu: bool

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult: ...


class UnknownEngine(Exception):
    pass


def _refuse(message: str, hint: str) -> NoReturn:
    from worldplay_cli.contract.specs import Failure
    from worker.runner import JobFailed

    raise JobFailed(Failure(kind="refused", message=message, hint=hint))


def allowed_path(requested: str | None, default: Path | None, others: list[Path], what: str, setting: str) -> Path | None:
    """The worker-side path a job uses: `default` (the worker's own setting) when the job names none,
    else the allowed entry (`default` or one of `others`) that the job's path resolves to. The entry as the
    worker configured it is returned, never the job's string, so a job cannot swap a symlink after the
    check. Anything else is refused: a job may choose among the worker's paths, never add one."""
    allowed = [Path(path).expanduser() for path in ([default] if default else []) + list(others)]
    if requested is None:
        return allowed[0] if default else None
    wanted = Path(requested).expanduser().resolve()
    for path in allowed:
        if path.resolve() == wanted:
            return path
    env = "WORLDPLAY_" + setting.upper().replace(".", "__")
    _refuse(
        f"{what} {requested} is not allowed on this worker",
        f"on the worker host, add it to {setting} (config file, or {env}=PATH[{os.pathsep}PATH...]) and restart the worker",
    )


def get_engine(name: str) -> Engine:
    """Instantiate the engine registered under `name`."""
    table = engine_table()
    if name not in table:
        raise UnknownEngine(f"unknown engine {name!r}; this worker has: {', '.join(sorted(table))}")
    module_name, _, attribute = table[name].partition(":")
    try:
        engine_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownEngine(f"engine {name!r} is not installed in this worker: {exc}") from None
    return engine_class()
