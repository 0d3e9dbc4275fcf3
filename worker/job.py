"""The worker's job vocabulary, one floor below everything that runs a job (engines, the resident ranks,
training, the runner, live sessions): the inputs the CLI stored for a job, the ways a job fails, how an
exception becomes the one user-facing `Failure`, how a job's end is recorded, and `JobRun`, one attempt of
a job in its work horse (its claim, reporter and manifest) that the runner and `worker.play` share.

Nothing here imports another floor of the worker (only `worker.progress` for the reporter, the cancel and
take-over signals, and `worker.proctree` to end an attempt's processes), so `worker.engines`,
`worker.runtime` and `worker.training` all take these names from below.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from worker import proctree
from worker.progress import JobCanceled, Reporter, RunTakenOver
from worldplay_cli.contract.errors import first_error
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.queue import append_log, end_manifest, note_attempt, write_json_atomic
from worldplay_cli.contract.settings import load_settings, settings_to_dict
from worldplay_cli.contract.specs import Failure, JobSpec, Manifest, Progress, Timings, VideoInfo, run_key

if TYPE_CHECKING:
    import numpy as np
    from redis import Redis
    from rq.job import Job

    from trajectories import Trajectory
    from worldplay_cli.contract.play import PlaySpec
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
    """The inputs the CLI stored in the job directory at enqueue time (a session's spec has no trajectory)."""

    job_dir: Path
    spec: JobSpec | PlaySpec

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
        checks = [(self.image_path, self.spec.image.sha256)] if self.spec.image is not None else []
        if getattr(self.spec, "trajectory", None) is not None:
            checks.append((self.trajectory_path, self.spec.trajectory.sha256))
        for path, expected in checks:
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise InputError(f"cannot read job input {path}: {exc.strerror}") from None
            if digest != expected:
                raise InputError(f"job input {path} changed since the job was enqueued (checksum mismatch)")

    def load_image(self) -> np.ndarray | None:
        """The reference image as RGB uint8, or None for a text-to-video job."""
        import numpy as np
        from PIL import Image

        if self.spec.image is None:
            return None
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


# --- one attempt of a job -------------------------------------------------------------------------------

# Set in the work horse once its worker process is gone (`WorldplayWorker._die_with_parent`): the job is
# the reaper's to re-queue now, and the errors its teardown causes here are not the job's outcome.
ORPHANED = threading.Event()


TAKEN_OVER = "another run of this job took over (this one was presumed dead)"


def disowned(exc: BaseException | None) -> bool:
    """Did this run stop owning its job, so that `exc` must not be recorded as the job's outcome? Its worker
    died (seen by the horse, or first by the native engine's resident supervisor: kind `worker_lost`), or
    another run took the job over (its claim is gone)."""
    if ORPHANED.is_set() or isinstance(exc, RunTakenOver):
        return True
    return isinstance(exc, JobFailed) and exc.failure.kind == "worker_lost"


def _versions() -> dict[str, str]:
    import numpy
    import redis
    import rq

    import worldplay_cli

    return {
        "worldplay": worldplay_cli.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "rq": rq.__version__,
        "redis-py": redis.__version__,
    }


def _gpu() -> dict | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"cuda_visible_devices": visible} if visible else None


class JobRun:
    """One attempt of a job in its work horse, whatever runs in it (a generation, a live session): the
    attempt counted in the meta, its `Reporter`, its claim on the job (`run_key` := this execution id,
    fencing a run presumed dead), its manifest, how it ends, and the end of every process it started."""

    def __init__(self, job: Job, manifest_model: type[Manifest] = Manifest):
        self.settings = load_settings()
        self.job = job
        self.conn: Redis = job.connection
        self.marker = os.environ.get(proctree.MARKER_ENV) or f"{job.id}:{os.getpid()}"
        self.execution_id = self.marker.split(":", 1)[1]
        self.directory = Path(self.settings.output_root) / job.id
        self.started_at = time.time()
        self.manifest_model = manifest_model
        self.manifest: dict | None = None  # the manifest's fields once the run has claimed the job
        job.get_meta(refresh=True)
        self.attempt = JobMeta.start_attempt(job.meta, str(self.directory), Progress(stage="starting"))
        job.save_meta()
        self.reporter = Reporter(self.conn, job, self.directory / "log.txt", self.settings)
        self.reporter.log(
            f"attempt {self.attempt} started on worker {job.worker_name} "
            f"(host {socket.gethostname()}, pid {os.getpid()})"
        )

    def inputs(self, spec: JobSpec | PlaySpec) -> JobInputs:
        """The job's inputs, checked against the spec's checksums."""
        if not self.directory.is_dir():
            raise InputError(
                f"job directory {self.directory} does not exist (is the output root shared with this worker?)"
            )
        inputs = JobInputs(self.directory, spec)
        inputs.verify()
        return inputs

    def claim(self, spec: JobSpec | PlaySpec) -> None:
        """Own the job from now on, remove what earlier (dead) runs left behind, write a 'running' manifest."""
        self.conn.set(run_key(self.job.id), self.execution_id, ex=self.settings.queue.failed_ttl_s)
        self.reporter.execution_id = self.execution_id
        for stale in self.directory.glob(".attempt-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.manifest = {
            "job_id": self.job.id,
            "attempt": self.attempt,
            "execution_id": self.execution_id,
            "queue": self.job.origin,
            "worker": self.job.worker_name or "",
            "spec": spec,
            "settings": settings_to_dict(self.settings),
            "versions": _versions(),
            "host": {"hostname": socket.gethostname(), "pid": os.getpid(), "platform": sys.platform},
            "gpu": _gpu(),
            "engine": {"name": spec.engine},
        }
        self.write_manifest("running")

    def owns(self) -> bool:
        owner = self.conn.get(run_key(self.job.id))
        return owner is not None and owner.decode() == self.execution_id

    def write_manifest(
        self, status: str, video: VideoInfo | None = None, failure: Failure | None = None, **extra: Any
    ) -> None:
        """`manifest.json` with `status` (and what the run found out: `extra` fields of the manifest model)."""
        ended = status != "running"
        finished_at = time.time() if ended else None
        timings = Timings(
            enqueued_at=self.job.enqueued_at.timestamp() if self.job.enqueued_at else None,
            started_at=self.started_at,
            finished_at=finished_at,
            duration_s=round(finished_at - self.started_at, 3) if finished_at else None,
            stages=dict(self.reporter.stage_times),
        )
        manifest = self.manifest_model(
            status=status, timings=timings, video=video, failure=failure, **self.manifest, **extra
        )
        write_json_atomic(self.directory / "manifest.json", manifest.model_dump(mode="json"))

    def record_failure(self, exc: BaseException, spec: JobSpec | PlaySpec | None, **extra: Any) -> None:
        """Record how the attempt failed (classified: meta, history, log, manifest with `extra`); the caller
        re-raises `exc`. A run that no longer owns its job records nothing, since whatever it saw (an encoder
        killed under it, a refused commit) is not the job's outcome: it raises `JobFailed(worker_lost)` when
        another run took over."""
        # However it failed (its attempt directory removed by the re-run, say), a run whose claim is gone
        # does not own the job any more.
        taken_over = not disowned(exc) and self.reporter.execution_id is not None and not self.owns()
        if taken_over or disowned(exc):
            why = (
                "its worker is gone"
                if ORPHANED.is_set()
                else exc.failure.message
                if isinstance(exc, JobFailed)
                else TAKEN_OVER
            )
            self.reporter.log(f"run {self.execution_id[:12]} ends without a result: {why}")
            if taken_over:
                raise JobFailed(Failure(kind="worker_lost", message=TAKEN_OVER)) from exc
            return
        failure = classify(exc, spec)
        status = "stopped" if failure.kind == "canceled" else "failed"
        if self.manifest is not None:
            self.write_manifest(status, failure=failure, **extra)
        record_end(self.conn, self.settings, self.job, failure, status)

    def end_processes(self) -> None:
        """Whatever the attempt started must not outlive it."""
        proctree.terminate(self.marker, grace_s=self.settings.worker.kill_grace_s)
