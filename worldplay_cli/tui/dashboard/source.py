"""Where the dashboard's data comes from: a small protocol, and its Redis implementation.

The app only talks to a `DashboardSource`, so it can be built around any source (tests build it around a
real Redis with a fixed clock). `RedisSource` sits on the jobs read model shared with `worldplay jobs`
(`worldplay_cli.jobs`) and on its incremental listing (`worldplay_cli.jobs_index`); every method blocks
and is called from Textual thread workers, never from the event loop. A lost Redis connection surfaces
as `SourceUnavailable`, everything a user did wrong as `WorldplayError` (shown as a notification).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.jobs_index import JobQuery, SortedPage

if TYPE_CHECKING:
    from PIL import Image

    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.jobs import JobRow, WorkerRow
    from worldplay_cli.submit import GenerateRequest, Submitted


class SourceUnavailable(Exception):
    """The backing store cannot be reached right now (the dashboard shows a banner and keeps trying)."""


@dataclass
class GpuStats:
    index: int
    memory_used_mb: int
    memory_total_mb: int
    utilization_pct: int


@dataclass
class WorkerView:
    row: WorkerRow
    gpus: list[GpuStats] = field(default_factory=list)  # filled only when NVML can see this worker's GPUs


@dataclass
class Snapshot:
    """Everything one refresh of the main screen shows."""

    page: SortedPage
    workers: list[WorkerView]
    suspended: bool
    queues: list[str]
    now: float
    refresh_s: float
    nvml: bool  # GPU columns are shown only when NVML answered


@dataclass
class LogChunk:
    lines: list[str]
    cursor: str  # stream entry id of the last line (pass it back to get only newer lines)


@dataclass
class JobDetail:
    row: JobRow
    spec: dict | None
    error: str | None  # rq's exception text, when the runner could not classify the failure
    output_dir: str | None
    files: list[str]
    stage_timings: dict[str, float]  # seconds per stage, from the manifest
    trajectory_plot: list[str] | None
    video: str | None  # only when the job finished and the file exists
    log: LogChunk
    train: dict | None = None  # a train job's meta["train"]: step, max_steps, loss, lr, loss_history, ...
    # The jobs it runs after and the jobs that run after it (a pipeline: generate -> eval), as read now.
    parents: list[JobRow] = field(default_factory=list)
    children: list[JobRow] = field(default_factory=list)


@dataclass
class SubmitChoices:
    """What the submit form offers, and what it starts with (the settings' defaults)."""

    engines: list[str]
    variants: list[str]
    engine: str
    variant: str
    queue: str


class DashboardSource(Protocol):
    location: str  # shown in the header (never with a password)

    def now(self) -> float: ...

    def snapshot(self, query: JobQuery) -> Snapshot: ...

    def job_detail(self, job_id: str) -> JobDetail | None: ...

    def read_log(self, job_id: str, cursor: str) -> LogChunk: ...

    def first_frame(self, video: str) -> Image.Image | None: ...

    def cancel(self, job_id: str) -> str: ...

    def retry(self, job_id: str) -> str: ...

    def requeue(self, job_id: str, changes: dict[str, Any], queue: str | None) -> str: ...

    def delete(self, job_id: str) -> str: ...

    def cancel_batch(self, batch: str) -> str: ...

    def retry_batch(self, batch: str) -> str: ...

    def set_suspended(self, suspended: bool) -> str: ...

    def submit_choices(self) -> SubmitChoices: ...

    def submit_request(self, request: GenerateRequest, queue: str | None) -> Submitted: ...

    def submit_file(self, path: Path) -> Submitted: ...


# Spec fields the re-queue form may change (the inputs themselves are copied from the original job).
EDITABLE_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "engine",
    "variant",
    "timeout_s",
    "output_name",
)


def first_video_frame(video: str, max_width: int = 160) -> Image.Image | None:
    """The first frame of an mp4, downscaled for drawing in a terminal; None if it cannot be decoded."""
    import imageio_ffmpeg
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(video)
    try:
        meta = next(reader)
        frame = next(reader)
    except (StopIteration, RuntimeError, OSError):
        return None
    finally:
        reader.close()
    width, height = meta["size"]
    image = Image.frombytes("RGB", (width, height), frame)
    if width > max_width:
        image = image.resize((max_width, max(1, round(height * max_width / width))), Image.Resampling.BILINEAR)
    return image


def trajectory_plot(path: Path, width: int = 40, height: int = 12) -> list[str] | None:
    from trajectories import Trajectory, TrajectoryError
    from trajectories.plot import top_down_plot

    try:
        trajectory = Trajectory.from_official_json(json.loads(path.read_text()))
    except (OSError, ValueError, TrajectoryError):
        return None
    return top_down_plot(trajectory, width, height)


def read_request_file(path: Path) -> tuple[dict, str | None]:
    """A `worldplay generate` request from a JSON, TOML or YAML file: (request fields, queue or None)."""
    from worldplay_cli.submit import GenerateRequest

    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            from worldplay_cli.contract.settings import toml_parser

            data = toml_parser().loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # each parser has its own error type; all mean "not a readable spec file"
        raise BadInput(f"cannot parse spec file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BadInput(f"spec file {path} must hold a mapping of request fields")
    queue = data.pop("queue", None)
    known = set(GenerateRequest.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"spec file {path}: unknown field {unknown[0]!r}", f"use: queue, {', '.join(sorted(known))}")
    if data.get("image"):
        data["image"] = (path.parent / Path(data["image"]).expanduser()).resolve()
    return data, queue


class RedisSource:
    """The dashboard's view of a Redis holding worldplay jobs (`url`) and the settings of this host."""

    def __init__(self, url: str, settings: Settings, clock: Callable[[], float] = time.time, nvml: bool = True):
        import redis

        from worldplay_cli.contract.settings import mask_url
        from worldplay_cli.jobs_index import JobsIndex

        self.settings = settings
        self.location = mask_url(url)
        self.clock = clock
        self.conn = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        self.index = JobsIndex(self.conn, clock=clock)
        self._index_lock = threading.Lock()
        self._nvml = _Nvml() if nvml else None
        self._plots: dict[str, list[str] | None] = {}

    def now(self) -> float:
        return self.clock()

    def _call(self, function: Callable, *args, **kwargs):
        import redis

        try:
            return function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise SourceUnavailable(
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            ) from None

    def snapshot(self, query: JobQuery) -> Snapshot:
        return self._call(self._snapshot, query)

    def _snapshot(self, query: JobQuery) -> Snapshot:
        from rq.suspension import WORKERS_SUSPENDED

        from worldplay_cli.jobs import list_workers

        started = time.perf_counter()
        with self._index_lock:
            self.index.refresh()
            page = self.index.query(query)
            queues = self.index.queue_names()
        workers = [WorkerView(row) for row in list_workers(self.conn, self.settings)]
        nvml = self._nvml is not None and self._nvml.attach(workers)
        suspended = bool(self.conn.exists(WORKERS_SUSPENDED))
        return Snapshot(page, workers, suspended, queues, self.clock(), time.perf_counter() - started, nvml)

    def job_detail(self, job_id: str) -> JobDetail | None:
        return self._call(self._job_detail, job_id)

    def _job_detail(self, job_id: str) -> JobDetail | None:
        from dataclasses import fields

        from worldplay_cli.jobs import JobRow, job_detail, log_tail
        from worldplay_cli.rows import job_rows

        try:
            data = job_detail(self.conn, self.settings, job_id, log_lines=1)
        except BadInput:
            return None
        row = JobRow(**{name.name: data[name.name] for name in fields(JobRow)})
        directory = Path(data["output_dir"]) if data.get("output_dir") else None
        stages: dict[str, float] = {}
        plot = None
        video = None
        if directory is not None:
            try:
                manifest = json.loads((directory / "manifest.json").read_text())
                stages = dict(manifest.get("timings", {}).get("stages") or {})
            except (OSError, ValueError):
                pass
            spec = data.get("spec") or {}
            if job_id not in self._plots:  # the trajectory of a job never changes; draw it once
                path = directory / (spec.get("trajectory") or {}).get("file", "trajectory.json")
                self._plots[job_id] = trajectory_plot(path)
            plot = self._plots[job_id]
            candidate = Path(row.video) if row.video else directory / "video.mp4"
            if row.status == "finished" and candidate.is_file():
                video = str(candidate)
        entries = log_tail(self.conn, job_id, 200)
        log = LogChunk([line for _, line in entries], entries[-1][0] if entries else "0-0")
        # rq forgets a parent's dependents once they are enqueued: the children are found by their depends_on
        # among the listed jobs, and every job of the chain is read again for its status now.
        with self._index_lock:
            children = sorted(
                other.id for other in self.index.rows.values() if other.depends_on and job_id in other.depends_on
            )
        chain = [found for found in job_rows(self.conn, [*(row.depends_on or []), *children]) if found is not None]
        return JobDetail(
            row=row,
            spec=data.get("spec"),
            error=data.get("error"),
            output_dir=str(directory) if directory else None,
            files=data.get("files") or [],
            stage_timings=stages,
            trajectory_plot=plot,
            video=video,
            log=log,
            train=data.get("train"),
            parents=[found for found in chain if found.id in (row.depends_on or [])],
            children=[found for found in chain if found.id in children],
        )

    def read_log(self, job_id: str, cursor: str) -> LogChunk:
        from worldplay_cli.jobs import read_log

        entries = self._call(read_log, self.conn, job_id, cursor)
        return LogChunk([line for _, line in entries], entries[-1][0] if entries else cursor)

    def first_frame(self, video: str) -> Image.Image | None:
        return first_video_frame(video)

    def _acted(self, job_ids: list[str]) -> None:
        with self._index_lock:
            self.index.invalidate(job_ids)

    def cancel(self, job_id: str) -> str:
        from worldplay_cli.jobs import cancel_job

        # Do not wait for the worker to end the process tree: the table shows the job when it stops.
        status = self._call(cancel_job, self.conn, self.settings, job_id, wait_s=0)
        self._acted([job_id])
        return f"{job_id}: cancel requested ({status})" if status == "started" else f"{job_id}: {status}"

    def retry(self, job_id: str) -> str:
        from worldplay_cli.jobs import retry_job

        status = self._call(retry_job, self.conn, self.settings, job_id)
        self._acted([job_id])
        return f"{job_id}: {status}"

    def requeue(self, job_id: str, changes: dict[str, Any], queue: str | None) -> str:
        from worldplay_cli.jobs import resubmit

        unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
        if unknown:
            raise BadInput(f"field {unknown[0]!r} cannot be changed when re-queueing")
        new_id = self._call(resubmit, self.conn, self.settings, job_id, changes, queue)
        return f"re-queued {job_id} as {new_id}"

    def delete(self, job_id: str) -> str:
        from worldplay_cli.jobs import delete_job

        self._call(delete_job, self.conn, self.settings, job_id)
        self._acted([job_id])
        return f"{job_id}: deleted (its output directory is kept)"

    def cancel_batch(self, batch: str) -> str:
        """Cancel a batch's waiting jobs and stop its running ones (what `jobs cancel --batch` does)."""
        from worldplay_cli.batch import batch_jobs_in
        from worldplay_cli.jobs import cancel_job
        from worldplay_cli.rows import ACTIVE

        job_ids = self._call(batch_jobs_in, self.conn, batch, ACTIVE)
        ended = 0
        for job_id in job_ids:
            try:
                self._call(cancel_job, self.conn, self.settings, job_id, wait_s=0)
            except BadInput:  # it ended since it was listed: nothing to cancel
                ended += 1
        self._acted(job_ids)
        note = f" ({ended} had ended meanwhile)" if ended else ""
        return f"{batch}: cancel requested for {len(job_ids) - ended} job(s){note}"

    def retry_batch(self, batch: str) -> str:
        """Put a batch's failed, stopped and canceled jobs back (what `jobs retry --batch` does)."""
        from worldplay_cli.batch import retry_batch

        results = self._call(retry_batch, self.conn, self.settings, batch)
        self._acted([result["job_id"] for result in results])
        replaced = sum(result["status"] == "replaced" for result in results)
        note = f", {replaced} eval job(s) submitted anew after their parents" if replaced else ""
        return f"{batch}: {len(results) - replaced} job(s) re-queued{note}"

    def set_suspended(self, suspended: bool) -> str:
        from rq.suspension import resume, suspend

        if suspended:
            self._call(suspend, self.conn)
            return "workers suspended: running jobs finish, no new job starts"
        self._call(resume, self.conn)
        return "workers resumed"

    def submit_choices(self) -> SubmitChoices:
        from worldplay_cli.contract.specs import VARIANT_DEFAULTS, engine_table

        settings = self.settings
        return SubmitChoices(
            sorted(engine_table()),
            list(VARIANT_DEFAULTS),
            settings.default_engine,
            settings.default_variant,
            settings.queue.default_queue,
        )

    def submit_request(self, request: GenerateRequest, queue: str | None) -> Submitted:
        from worldplay_cli.submit import prepare, submit_generation

        prepared = prepare(request, self.settings)  # bad input is BadInput, not a lost source
        return self._call(submit_generation, prepared, self.settings, self.conn, queue)

    def submit_file(self, path: Path) -> Submitted:
        from worldplay_cli.submit import GenerateRequest

        fields, queue = read_request_file(path)
        try:
            request = GenerateRequest(**fields)
        except TypeError as exc:
            raise BadInput(f"spec file {path}: {exc}") from None
        return self.submit_request(request, queue)


class _Nvml:
    """GPU memory and utilisation of this host's GPUs, when `pynvml` is installed and a driver answers."""

    def __init__(self):
        import socket

        self.hostname = socket.gethostname()
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no module, no driver, no GPU: all mean "no NVML here"
            self.pynvml = None
        else:
            self.pynvml = pynvml

    def attach(self, workers: list[WorkerView]) -> bool:
        if self.pynvml is None:
            return False
        nvml = self.pynvml
        for worker in workers:
            if worker.row.hostname != self.hostname or not worker.row.gpus:
                continue
            for index in (int(part) for part in worker.row.gpus.split(",") if part.strip().isdigit()):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                except nvml.NVMLError:
                    continue
                worker.gpus.append(GpuStats(index, memory.used // 2**20, memory.total // 2**20, utilization.gpu))
        return True


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, WorldplayError):
        return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"
