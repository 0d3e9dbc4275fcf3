"""The jobs read model (and the few writes users make): one place for `worldplay jobs` and the dashboard.

Listings go through `worldplay_cli.jobs_index`: `jobs list` reads one page of our index `worldplay:jobs`
(job id -> creation time) with the counts from rq's registry sizes (`newest_page`); the dashboard and a
text search keep every row (`JobsIndex`: one membership scan of rq's registries and the index, then the
rows that can have changed). Ids whose rq record expired are dropped from our index as they are met. A
row (`JobRow`) and the statuses live one floor down in `worldplay_cli.rows`, which both read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.specs import (
    HUD_VIDEO_FILE,
    JOBS_INDEX,
    VIDEO_FILE,
    Failure,
    JobSpec,
    cancel_key,
    log_stream_key,
    run_key,
)
from worldplay_cli.jobs_index import JobQuery, JobsIndex, newest_page
from worldplay_cli.rows import (
    ACTIVE,
    ENDED,
    JOB_PREFIX,
    STATUSES,
    JobRow,
    WorkerRow,
    job_rows,
    list_workers,
    unserved_queue_warning,
)

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.settings import Settings

__all__ = [
    "ACTIVE",
    "ENDED",
    "JOB_PREFIX",
    "STATUSES",
    "JobPage",
    "JobRow",
    "WorkerRow",
    "job_rows",
    "list_workers",
    "unserved_queue_warning",
]


@dataclass
class JobPage:
    rows: list[JobRow]
    total: int  # matching the filter
    offset: int
    limit: int
    counts: dict[str, int] = field(default_factory=dict)  # every indexed job, by status

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "counts": self.counts,
            "jobs": [row.to_dict() for row in self.rows],
        }


def list_jobs(
    conn: Redis,
    statuses: set[str] | None = None,
    queue: str | None = None,
    text: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> JobPage:
    """A page of jobs, newest first, filtered by status, queue and a text (id, prompt, engine, worker,
    failure...). Without a text, only the page's rows are read (`newest_page`); with one, the dashboard's
    read model (`JobsIndex`) answers it. Both order jobs by creation, newest first, and agree on every job
    worldplay's queue enqueued (the read model also shows jobs put on a queue by plain rq)."""
    unknown = set(statuses or ()) - set(STATUSES)
    if unknown:
        raise BadInput(f"unknown status {sorted(unknown)[0]!r}", f"use one of: {', '.join(STATUSES)}")
    if text:
        # A text filter matches prompts and failures: every row is read.
        index = JobsIndex(conn)
        index.refresh()
        query = JobQuery(
            statuses=frozenset(statuses or ()),
            queues=frozenset([queue] if queue else ()),
            text=text,
            offset=offset,
            limit=limit,
        )
        page = index.query(query)
    else:
        page = newest_page(conn, frozenset(statuses or ()), queue, offset, limit)
    return JobPage(rows=page.rows, total=page.matched, offset=page.offset, limit=limit, counts=page.counts)


def resolve_job_id(conn: Redis, text: str) -> str:
    """The job a user means: its id, a unique prefix of it, its random part (`9f2c1a`), its `--name` or a
    unique prefix of the name."""
    from worldplay_cli.contract.specs import job_id_token

    wanted = text.strip()
    if not wanted:
        raise BadInput("empty job id", "list jobs with `worldplay jobs list`")
    if conn.exists(JOB_PREFIX + wanted):
        return wanted
    known = [member.decode() for member in conn.zrange(JOBS_INDEX, 0, -1)]
    matches = [job_id for job_id in known if job_id.startswith(wanted) or job_id_token(job_id) == wanted]
    if not matches:
        names = {row.id: row.output_name or "" for row in job_rows(conn, known) if row is not None}
        # the whole name first: "walk" must not become ambiguous because "walk 2" exists too
        matches = [job_id for job_id, name in names.items() if name == wanted] or [
            job_id for job_id, name in names.items() if name.startswith(wanted)
        ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadInput(f"no job {wanted!r}", "list jobs with `worldplay jobs list`")
    shown = ", ".join(sorted(matches)[-5:]) + (", ..." if len(matches) > 5 else "")
    raise BadInput(f"{wanted!r} matches {len(matches)} jobs: {shown}", "type more of the id")


def get_row(conn: Redis, job_id: str) -> JobRow:
    row = job_rows(conn, [job_id])[0]
    if row is None:
        raise BadInput(f"no job {job_id!r}", "list jobs with `worldplay jobs list`")
    return row


def job_detail(conn: Redis, settings: Settings, job_id: str, log_lines: int = 20) -> dict:
    """Row + spec + result or error + training metrics (train jobs) + output files + the last log lines."""
    from worldplay_cli.contract.queue import fetch_job, job_dir

    row = get_row(conn, job_id)
    job = fetch_job(conn, job_id)
    detail: dict[str, Any] = row.to_dict()
    try:
        detail["spec"] = job.args[0] if job and job.args else None
    except Exception:  # an undecodable (refused) job still gets a detail view
        detail["spec"] = None
    result = job.latest_result() if job else None
    detail["result"] = result.return_value if result is not None and result.type == result.Type.SUCCESSFUL else None
    detail["error"] = result.exc_string if result is not None and result.exc_string else None
    detail["train"] = job.meta.get("train") if job else None
    directory = job_dir(settings, job_id)
    detail["output_dir"] = str(directory)
    detail["files"] = (
        sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []
    )
    detail["log"] = [line for _, line in log_tail(conn, job_id, log_lines)]
    return detail


def describe_spec(spec: dict | None) -> list[str]:
    """A job's spec in a few lines for people, whatever its kind."""
    if not spec:
        return []
    kind = spec.get("kind", "generate")
    if kind == "generate":
        trajectory = spec.get("trajectory") or {}
        lines = [
            f"generate {spec.get('engine')}/{spec.get('variant')}, {spec.get('frames')} frames, "
            f"{spec.get('width')}x{spec.get('height')}, {spec.get('steps')} steps, seed {spec.get('seed')}, "
            f"trajectory {trajectory.get('source')!r}",
            f"prompt: {spec.get('prompt')!r}",
        ]
        extras = []
        if spec.get("sr"):
            extras.append("720p super-resolution" + (", keeps video_480p.mp4" if spec.get("keep_pre_sr") else ""))
        if spec.get("hud"):
            extras.append("HUD video")
        lines += [f"also: {'; '.join(extras)}"] if extras else []
        return lines + ([f"name: {spec['output_name']}"] if spec.get("output_name") else [])
    if kind == "train":
        config = spec.get("config") or {}
        method = (config.get("method") or {}).get("name", "ar")
        how = "LoRA rank {}".format(config["lora"].get("rank")) if config.get("lora") else "full fine-tuning"
        return [
            f"train {method}, {how}, {config.get('max_steps')} steps on {spec.get('gpus', 1)} GPU(s)"
            + (", FSDP" if config.get("fsdp") else ""),
            f"model: {(config.get('model') or {}).get('model_dir')}",
            f"data: {(config.get('data') or {}).get('path')}",
        ] + ([f"resume: {spec['resume']}"] if spec.get("resume") else [])
    if kind == "play":
        return [
            f"play {spec.get('engine')}/{spec.get('variant')}, {spec.get('width')}x{spec.get('height')}, "
            f"{spec.get('steps')} steps, seed {spec.get('seed')}, up to {spec.get('max_chunks')} chunks, "
            f"ends after {spec.get('idle_timeout_s'):g} s without the player",
            f"prompt: {spec.get('prompt')!r}",
        ]
    fields = ", ".join(
        f"{key} {value}"
        for key, value in spec.items()
        if key not in ("kind", "version") and not isinstance(value, dict)
    )
    return [f"{kind}: {fields}"]


def describe_play(play: dict | None) -> str:
    """A live session's figures in one line (`JobMeta.play`): `12 chunks, 189 frames, latency 0.31 s`."""
    if not play:
        return ""
    text = f"{play.get('chunks', 0)} chunks, {play.get('frames', 0)} frames"
    if play.get("latency_s") is not None:
        text += f", latency {play['latency_s']:.2f} s"
    return text


def describe_training(train: dict | None) -> list[str]:
    """A train job's last reported step, loss and validation, from its `meta["train"]`."""
    if not train or "step" not in train:
        return []
    line = f"step {train['step']}/{train.get('max_steps')}, loss {train.get('loss'):.4g}, lr {train.get('lr'):.3g}"
    if train.get("samples_per_s"):
        line += f", {train['samples_per_s']:.3g} samples/s"
    lines = [line]
    if train.get("validation"):
        metrics = {key: value for key, value in train["validation"].items() if isinstance(value, (int, float))}
        lines.append("validation: " + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))
    if train.get("checkpoint"):
        lines.append(f"checkpoint: {train['checkpoint']}")
    return lines


def log_tail(conn: Redis, job_id: str, count: int = 50) -> list[tuple[str, str]]:
    """The last `count` log lines as (stream entry id, line), oldest first."""
    if count <= 0:
        return []
    entries = conn.xrevrange(log_stream_key(job_id), count=count)
    return [(entry_id.decode(), fields[b"line"].decode()) for entry_id, fields in reversed(entries)]


def read_log(conn: Redis, job_id: str, after: str = "0-0", block_ms: int | None = None) -> list[tuple[str, str]]:
    """Log lines after stream entry `after`, waiting up to `block_ms` for new ones."""
    answer = conn.xread({log_stream_key(job_id): after}, block=block_ms, count=500)
    if not answer:
        return []
    return [(entry_id.decode(), fields[b"line"].decode()) for entry_id, fields in answer[0][1]]


def cancel_job(conn: Redis, settings: Settings, job_id: str, wait_s: float | None = None) -> str:
    """Cancel a queued job, or stop a running one (its whole process tree); returns the new status."""
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation

    from worldplay_cli.contract.queue import SERIALIZER, append_log, fetch_job, job_dir, set_failure

    job = fetch_job(conn, job_id)
    if job is None:
        raise BadInput(f"no job {job_id!r}", "list jobs with `worldplay jobs list`")
    status = job.get_status().value
    if status in ("queued", "deferred", "scheduled"):
        job.cancel()
        set_failure(job, Failure(kind="canceled", message="canceled by the user before it started"))
        append_log(conn, settings, job_id, "canceled before it started", job_dir(settings, job_id) / "log.txt")
        return "canceled"
    if status != "started":
        raise BadInput(f"job {job_id} already ended ({status})", f"see it with `worldplay jobs show {job_id}`")
    # Cooperative first (the engine stops at its next step), then the worker ends the process tree.
    conn.set(cancel_key(job_id), "1", ex=settings.queue.failed_ttl_s)
    try:
        send_stop_job_command(conn, job_id, serializer=SERIALIZER)
    except InvalidJobOperation:
        pass
    deadline = time.monotonic() + (settings.worker.kill_grace_s + 15 if wait_s is None else wait_s)
    while time.monotonic() < deadline:
        status = job.get_status().value
        if status in ENDED:
            return status
        time.sleep(0.1)
    return job.get_status().value


def retry_job(conn: Redis, settings: Settings, job_id: str) -> str:
    """Put a failed, stopped or canceled job back on its queue (same id, same output directory)."""
    from worldplay_cli.contract.queue import SERIALIZER, append_log, fetch_job, job_dir

    job = fetch_job(conn, job_id)
    if job is None:
        raise BadInput(f"no job {job_id!r}", "list jobs with `worldplay jobs list`")
    status = job.get_status().value
    if status not in ("failed", "stopped", "canceled"):
        raise BadInput(
            f"job {job_id} is {status}; only failed, stopped or canceled jobs can be retried",
            "submit a new job instead",
        )
    if (job_dir(settings, job_id) / "video.mp4").exists():
        raise BadInput(f"job {job_id} already has a video", "submit a new job instead")
    if status == "canceled":
        from rq.registry import CanceledJobRegistry

        registry = CanceledJobRegistry(job.origin, conn, job_class=type(job), serializer=SERIALIZER)
    else:
        registry = job.failed_job_registry
    job.retries_left = settings.queue.retries_on_lost_worker or None
    JobMeta.clear_outcome(job.meta)
    conn.delete(cancel_key(job_id))
    registry.requeue(job)
    append_log(conn, settings, job_id, "re-queued by the user", job_dir(settings, job_id) / "log.txt")
    return job.get_status().value


def resubmit(
    conn: Redis, settings: Settings, job_id: str, changes: dict | None = None, queue: str | None = None
) -> str:
    """A new job from an existing one's spec (optionally changed) and inputs; returns the new job id."""
    from worldplay_cli.contract.queue import enqueue, fetch_job, job_dir
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.submit import PreparedJob, write_inputs

    job = fetch_job(conn, job_id)
    if job is None:
        raise BadInput(f"no job {job_id!r}", "list jobs with `worldplay jobs list`")
    try:
        spec = JobSpec.model_validate({**job.args[0], **(changes or {})})
    except Exception as exc:
        raise BadInput(f"cannot re-submit {job_id}: {str(exc).splitlines()[0]}", "submit a new job instead") from None
    source = job_dir(settings, job_id)
    new_id = new_job_id()
    image = (source / spec.image.file).read_bytes() if spec.image is not None else None  # None: text-to-video
    write_inputs(settings, new_id, PreparedJob(spec, image, (source / spec.trajectory.file).read_bytes()))
    enqueue(conn, settings, spec, new_id, queue or job.origin)
    return new_id


def delete_job(conn: Redis, settings: Settings, job_id: str, remove_files: bool = False) -> dict:
    """Forget a job that is not running (and, if asked, delete its output directory)."""
    from worldplay_cli.contract.queue import fetch_job, job_dir

    job = fetch_job(conn, job_id)
    if job is not None and job.get_status().value == "started":
        raise BadInput(f"job {job_id} is running", f"cancel it first: worldplay jobs cancel {job_id}")
    if job is not None:
        job.delete()
    conn.delete(log_stream_key(job_id), cancel_key(job_id), run_key(job_id))
    removed = conn.zrem(JOBS_INDEX, job_id)
    if job is None and not removed:
        raise BadInput(f"no job {job_id!r}", "list jobs with `worldplay jobs list`")
    directory = job_dir(settings, job_id)
    had_files = directory.is_dir()
    if remove_files and had_files:
        shutil.rmtree(directory)
    return {
        "job_id": job_id,
        "deleted": True,
        "output_dir": str(directory),
        "files_removed": had_files and remove_files,
        "files_kept": had_files and not remove_files,
    }


def wait_for(conn: Redis, job_id: str, timeout_s: float | None = None, poll_s: float = 0.2) -> JobRow:
    """Poll until the job ends (or `timeout_s` passes); returns the last row seen."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        row = get_row(conn, job_id)
        if row.status in ENDED or (deadline is not None and time.monotonic() > deadline):
            return row
        time.sleep(poll_s)


def add_hud(settings: Settings, job_id: str) -> dict:
    """Write `video_hud.mp4` beside a finished job's clean video (in a subprocess: drawing needs the
    worker's video code, which the CLI never imports); returns its facts."""
    from worldplay_cli.contract.queue import job_dir

    directory = job_dir(settings, job_id)
    if not (directory / VIDEO_FILE).is_file():
        raise BadInput(
            f"job {job_id} has no {VIDEO_FILE} (yet)", f"wait for it to finish: `worldplay jobs show {job_id}`"
        )
    if (directory / HUD_VIDEO_FILE).exists():
        raise BadInput(f"job {job_id} already has {HUD_VIDEO_FILE}", f"it is {directory / HUD_VIDEO_FILE}")
    if not (directory / "trajectory.json").is_file():
        raise BadInput(f"job {job_id} has no trajectory.json to draw the keys from", "it was made without one")
    completed = subprocess.run(
        [sys.executable, "-m", "worker.hud", str(directory)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        raise WorldplayError(
            f"could not write {HUD_VIDEO_FILE} for job {job_id}: {lines[-1] if lines else 'the writer failed'}",
            "check the job directory is writable and its video decodes",
        )
    return {"job_id": job_id, **json.loads(completed.stdout.strip().splitlines()[-1])}
