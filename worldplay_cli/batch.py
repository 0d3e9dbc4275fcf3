"""Batches: one file (or one prompt per line) expanded into many generation jobs with one batch id.

A batch file (YAML or JSON, `version: 1`):

    version: 1
    name: lighthouse-sweep          # optional: a label in the batch id
    eval: true                      # optional: an eval job after each generation (generate -> eval)
    defaults: {engine: preview, width: 128, height: 80}
    grid:                           # every combination of these lists ...
      prompt: ["a lighthouse at dusk", "a harbour in fog"]
      pose: [orbit-left, walk-and-turn]
      seed: [1, 2]
    jobs:                           # ... and/or these jobs, one by one (each over `defaults`)
      - {prompt: "a red barn", image: barn.png}

Every key of `defaults`, `grid` and `jobs` is a `worldplay generate` option by its request field name
(`prompt`, `image`, `pose`, `engine`, `variant`, `seed`, `steps`, `width`, ... `output_name` for --name,
`timeout_s` for --timeout). Every job is prepared (validated) before any is enqueued, so a bad key or value
gives one line naming the job and nothing is enqueued.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from worldplay_cli.contract.errors import BadInput, first_error
from worldplay_cli.submit import GenerateRequest, PreparedJob, prepare

BATCH_VERSION = 1
MAX_JOBS = 1000


# The prompt rewrite runs in `generate` before submission, not per batch job: not an option here.
OPTION_NAMES = tuple(field.name for field in fields(GenerateRequest) if field.name != "rewrite")


def _request_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(GenerateRequest)
    return {name: (Optional[hints[name]], None) for name in OPTION_NAMES}


# A job's options: the fields of `GenerateRequest`, all optional, nothing else.
JobOptions = create_model("JobOptions", __config__=ConfigDict(extra="forbid"), **_request_fields())


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    name: Optional[str] = Field(default=None, max_length=40, pattern=r"^[\w\-]+$")
    eval: bool = False
    defaults: JobOptions = Field(default_factory=JobOptions)  # type: ignore[valid-type]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    jobs: list[JobOptions] = Field(default_factory=list)  # type: ignore[valid-type]


def describe_error(error: ValidationError) -> str:
    """One line for a batch or suite file's first validation error (a key the file may not have: unknown key)."""
    return first_error(error).replace("Extra inputs are not permitted", "unknown key")


def load_batch(path: Path) -> BatchFile:
    """Read and validate a batch file (YAML or JSON); BadInput with one line on any problem."""
    import yaml

    hint = f"keys: version, name, eval, defaults, grid, jobs; options: {', '.join(OPTION_NAMES)}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise BadInput(f"cannot read batch file {path}: {error.strerror}", "check the path") from None
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML/JSON ({str(error).splitlines()[0]})", hint) from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a batch file is a mapping with version: {BATCH_VERSION}", hint)
    try:
        batch = BatchFile.model_validate(data)
    except ValidationError as error:
        raise BadInput(f"{path}: {describe_error(error)}", hint) from None
    unknown = sorted(set(batch.grid) - set(OPTION_NAMES))
    if unknown:
        raise BadInput(f"{path}: grid.{unknown[0]}: unknown key", hint)
    empty = [key for key, values in batch.grid.items() if not values]
    if empty:
        raise BadInput(f"{path}: grid.{empty[0]}: an empty list makes no jobs", "give at least one value")
    return batch


def prompts_batch(path: Path, defaults: dict[str, Any]) -> BatchFile:
    """`generate --prompts FILE`: one prompt per line, or JSON lines (objects of options, or strings)."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as error:
        raise BadInput(f"cannot read prompts file {path}: {error.strerror}", "check the path") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if line.startswith(("{", '"')):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadInput(f"{path}:{number}: not valid JSON ({error.msg})", "one JSON object per line") from None
        else:
            entry = line
        jobs.append({"prompt": entry} if isinstance(entry, str) else entry)
    if not jobs:
        raise BadInput(f"{path} has no prompts", "one prompt per line, or one JSON object per line")
    try:
        return BatchFile(version=BATCH_VERSION, defaults=defaults, jobs=jobs)
    except ValidationError as error:
        raise BadInput(f"{path}: {describe_error(error)}", f"options: {', '.join(OPTION_NAMES)}") from None


def expand(batch: BatchFile) -> list[dict[str, Any]]:
    """The options of every job: the grid's combinations, then the listed jobs, each over `defaults`."""
    defaults = batch.defaults.model_dump(exclude_unset=True)
    combos = []
    if batch.grid:
        keys = list(batch.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(batch.grid[key] for key in keys))]
    elif not batch.jobs:
        combos = [{}]
    combos += [job.model_dump(exclude_unset=True) for job in batch.jobs]
    if len(combos) > MAX_JOBS:
        raise BadInput(f"the batch expands to {len(combos)} jobs (at most {MAX_JOBS})", "split it into several files")
    return [{**defaults, **combo} for combo in combos]


@dataclass
class PlannedJob:
    options: dict[str, Any]
    prepared: PreparedJob


def plan(batch: BatchFile, settings) -> list[PlannedJob]:
    """Prepare every job (all checks of `generate`, nothing written); the first bad one raises with its number."""
    planned = []
    for index, options in enumerate(expand(batch), 1):
        try:
            request = GenerateRequest(**JobOptions.model_validate(options).model_dump(exclude_unset=True))
            planned.append(PlannedJob(options, prepare(request, settings)))
        except ValidationError as error:
            raise BadInput(f"job {index}: {describe_error(error)}", f"options: {', '.join(OPTION_NAMES)}") from None
        except BadInput as error:
            raise BadInput(f"job {index} ({_describe(options)}): {error.message}", error.hint) from None
    return planned


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in options.items() if key != "prompt") or "defaults"


def cost(planned: list[PlannedJob]) -> dict[str, Any]:
    """What the batch asks of the workers: jobs and frames, and the denoising work of the model engines in
    latent-steps (latents x steps x CFG branches, the unit a GPU's time is proportional to); the preview
    engine costs CPU seconds only."""
    from worldplay_cli.contract import variants

    by_engine: dict[str, dict[str, int]] = {}
    for job in planned:
        spec = job.prepared.spec
        totals = by_engine.setdefault(spec.engine, {"jobs": 0, "frames": 0, "latent_steps": 0, "gpu_jobs": 0})
        branches = 2 if spec.guidance > 1 and not variants.get(spec.variant).few_step else 1
        totals["jobs"] += 1
        totals["frames"] += spec.frames
        totals["gpu_jobs"] += spec.gpus if spec.engine != "preview" else 0
        totals["latent_steps"] += spec.trajectory.num_latents * spec.steps * branches if spec.engine != "preview" else 0
    return {
        "jobs": len(planned),
        "frames": sum(job.prepared.spec.frames for job in planned),
        "by_engine": by_engine,
    }


def new_batch_id(name: str | None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    return f"batch-{stamp}-{name}" if name else f"batch-{stamp}"


def submit_batch(batch: BatchFile, planned: list[PlannedJob], settings, conn, queue: str | None = None) -> dict:
    """Enqueue every planned job with one batch id (and its eval job when the file asks); returns the ids."""
    from worldplay_cli.evaluate import submit_eval
    from worldplay_cli.submit import submit_generation

    batch_id = new_batch_id(batch.name)
    jobs = []
    for job in planned:
        submitted = submit_generation(job.prepared, settings, conn, queue, check_served=False, batch=batch_id)
        entry = {"job_id": submitted.job_id, "options": job.options}
        if batch.eval:
            entry["eval_job_id"] = submit_eval(conn, settings, submitted.job_id, queue, batch=batch_id)
        jobs.append(entry)
    return {"batch": batch_id, "jobs": jobs}


def resolve_batch(conn, batch: str) -> str:
    """A batch id from the id or a unique prefix; BadInput when there is none."""
    from worldplay_cli.contract.queue import BATCH_PREFIX, batch_key

    if conn.exists(batch_key(batch)):
        return batch
    matches = sorted({key.decode()[len(BATCH_PREFIX) :] for key in conn.scan_iter(f"{BATCH_PREFIX}{batch}*")})
    if len(matches) > 1:
        raise BadInput(f"batch {batch!r} is ambiguous ({', '.join(matches[:3])}, ...)", "give more of the id")
    if not matches:
        raise BadInput(f"no batch {batch!r}", "the batch id was printed by `worldplay batch`")
    return matches[0]


def batch_job_ids(conn, batch: str) -> list[str]:
    """The job ids of a batch (its id or a unique prefix), oldest first."""
    from worldplay_cli.contract.queue import batch_key

    return [job_id.decode() for job_id in conn.zrange(batch_key(resolve_batch(conn, batch)), 0, -1)]


def batch_jobs_in(conn, batch: str, statuses: frozenset[str]) -> list[str]:
    """The ids of a batch's jobs that are in one of `statuses` (all of them when it is empty), oldest first."""
    from worldplay_cli.rows import job_rows

    rows = job_rows(conn, batch_job_ids(conn, batch))
    return [row.id for row in rows if row is not None and (not statuses or row.status in statuses)]


RETRYABLE = frozenset({"failed", "stopped", "canceled"})


def retry_batch(conn, settings, batch: str) -> list[dict]:
    """Put a batch's failed, stopped and canceled jobs back on their queues (same ids). A dependent job (an
    eval after its generation) is submitted anew after its parent instead: rq would run a re-queued
    dependent at once, before its parent's new run."""
    from worldplay_cli.evaluate import submit_eval
    from worldplay_cli.jobs import retry_job
    from worldplay_cli.rows import job_rows

    batch = resolve_batch(conn, batch)
    rows = [row for row in job_rows(conn, batch_job_ids(conn, batch)) if row is not None]
    results = []
    for row in rows:
        if row.status in RETRYABLE and not row.depends_on:
            results.append({"job_id": row.id, "status": retry_job(conn, settings, row.id)})
    for row in rows:
        if row.status in RETRYABLE and row.depends_on:
            parent = row.depends_on[0]
            new_id = submit_eval(conn, settings, parent, row.queue, batch=batch)
            results.append({"job_id": row.id, "status": "replaced", "note": f"replaced by {new_id} (after {parent})"})
    return results


def batch_page(conn, batch: str, statuses: set[str] | None, queue: str | None, offset: int, limit: int):
    """`jobs list --batch`: the batch's jobs (newest first) as a `JobPage`, filtered like any listing."""
    from worldplay_cli.jobs import JobPage
    from worldplay_cli.rows import job_rows

    rows = [row for row in job_rows(conn, batch_job_ids(conn, batch)) if row is not None][::-1]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    matched = [row for row in rows if (not statuses or row.status in statuses) and (not queue or row.queue == queue)]
    return JobPage(rows=matched[offset : offset + limit], total=len(matched), offset=offset, limit=limit, counts=counts)
