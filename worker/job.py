"""The worker's job vocabulary, one floor below everything that runs a job (engines, the resident ranks,
training, the runner): the inputs the CLI stored for a job, the ways a job fails, how an exception becomes
the one user-facing `Failure`, and how a job's end is recorded.

Nothing here imports another floor of the worker (only `worker.progress` for the cancel and take-over
signals), so `worker.engines`, `worker.runtime` and `worker.training` all take these names from below.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from worker.progress import JobCanceled
from worldplay_cli.contract.errors import first_error
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.queue import append_log, end_manifest, note_attempt
from worldplay_cli.contract.specs import Failure, JobSpec

if TYPE_CHECKING:
    import numpy as np
    from redis import Redis
    from rq.job import Job

    from trajectories import Trajectory
    from worldplay_cli.contract.settings import Settings


class InputError(Exception):
    """The job's inputs on disk are missing or do not match the spec."""


class UnknownEngine(Exception):
    """The job names an engine this worker does not have."""


class JobFailed(Exception):
    """A failure already classified: raised with the `Failure` the job ends with."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def refuse(message: str, hint: str | None = None, kind: str = "refused") -> NoReturn:
    """End the job with one classified line (`refused` unless told otherwise)."""
    raise JobFailed(Failure(kind=kind, message=message, hint=hint or None))


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
            refuse(
                f"job input {field_name} {name!r} resolves to {path}, outside the job directory",
                "job inputs are files in the job directory; submit jobs with `worldplay generate`",
            )
        return path

    def verify(self) -> None:
        for path, expected in (
            (self.image_path, self.spec.image.sha256),
            (self.trajectory_path, self.spec.trajectory.sha256),
        ):
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
        from trajectories import load_trajectory

        return load_trajectory(self.trajectory_path)


@dataclass
class EngineResult:
    video: Path
    info: dict[str, Any] = field(default_factory=dict)  # engine-specific facts for the manifest


def allowed_path(
    requested: str | None, default: Path | None, others: list[Path], what: str, setting: str
) -> Path | None:
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
    refuse(
        f"{what} {requested} is not allowed on this worker",
        f"on the worker host, add it to {setting} (config file, or {env}=PATH[{os.pathsep}PATH...]) and restart the worker",
    )


def classify(exc: BaseException, spec: JobSpec | None) -> Failure:
    """One user-facing line (and a hint) for whatever ended the job."""
    from rq.timeouts import JobTimeoutException

    if isinstance(exc, JobFailed):
        return exc.failure
    if isinstance(exc, JobCanceled):
        return Failure(kind="canceled", message="canceled by the user")
    if isinstance(exc, JobTimeoutException):
        limit = f" of {spec.timeout_s} s" if spec else ""
        return Failure(
            kind="timeout", message=f"job exceeded its timeout{limit}", hint="raise --timeout (or job_timeout_s)"
        )
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return Failure(
            kind="oom",
            message=f"out of memory: {_one_line(exc)}",
            hint="use fewer frames, a smaller resolution, more GPUs per job or a lower-memory profile",
        )
    if isinstance(exc, (ValidationError, InputError)):
        return Failure(kind="bad_input", message=_one_line(exc), hint="re-submit the job with `worldplay generate`")
    if isinstance(exc, UnknownEngine):
        return Failure(kind="refused", message=_one_line(exc), hint="run this engine on a worker that has it installed")
    return Failure(kind="engine_error", message=f"{type(exc).__name__}: {_one_line(exc)}", hint="see the job log")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return f"invalid job spec: {first_error(exc)}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def record_end(conn: Redis, settings: Settings, job: Job, failure: Failure, status: str = "failed") -> None:
    """Failure bookkeeping shared by the runner, training jobs and the worker process (when the horse
    could not do it): the job meta, the attempt history, the log and the manifest."""
    job.get_meta(refresh=True)
    JobMeta.set_failure(job.meta, failure)
    note_attempt(job, failure)
    job.save_meta()
    directory = Path(settings.output_root) / job.id
    append_log(conn, settings, job.id, f"{status}: {failure.message}", directory / "log.txt")
    end_manifest(directory, status, failure)
