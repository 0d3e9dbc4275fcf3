"""`worldplay eval --suite FILE`: a named set of images x poses, run once per entry of `runs` (engines,
variants, checkpoints: any generate options) as one batch with an eval job after every generation, then one
comparison table (and JSON) per run.

A suite file (YAML, `version: 1`; the default is `worldplay_cli/assets/eval_suite.yaml`):

    version: 1
    name: default
    images: [meadow, city]                      # bundled names or paths
    poses: {loop: "right:12-30, hold-1", orbit: orbit-left}
    defaults: {width: 416, height: 240}         # generate options for every job
    runs:                                       # what is compared: a name -> generate options
      preview: {engine: preview}
      distilled: {engine: native, variant: ar-distilled}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worldplay_cli.batch import BATCH_VERSION, BatchFile, JobOptions, describe_error
from worldplay_cli.contract.errors import BadInput

DEFAULT_SUITE = Path(__file__).resolve().parent / "assets" / "eval_suite.yaml"
# The headline figures a comparison shows, from each eval.json: (section, key).
HEADLINES = {
    "R_dist": ("camera_following", "R_dist"),
    "T_dist": ("camera_following", "T_dist"),
    "revisit_psnr": ("revisit", "psnr"),
    "revisit_ssim": ("revisit", "ssim"),
    "drift": ("drift", "drift"),
    "sharpness_ratio": ("drift", "sharpness_ratio"),
    "pixel_epe": ("action_following", "pixel_epe"),
}


class SuiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    name: Optional[str] = Field(default=None, max_length=40, pattern=r"^[\w\-]+$")
    images: list[str] = Field(min_length=1)
    poses: dict[str, str] = Field(min_length=1)
    defaults: JobOptions = Field(default_factory=JobOptions)  # type: ignore[valid-type]
    runs: dict[str, JobOptions] = Field(min_length=1)  # type: ignore[valid-type]


def load_suite(path: Path | None) -> SuiteFile:
    import yaml

    path = Path(path) if path is not None else DEFAULT_SUITE
    hint = "keys: version, name, images, poses, defaults, runs (see docs/eval.md#suites)"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise BadInput(f"cannot read suite file {path}: {error.strerror}", "check the path") from None
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML ({str(error).splitlines()[0]})", hint) from None
    try:
        return SuiteFile.model_validate(data)
    except ValidationError as error:
        raise BadInput(f"{path}: {describe_error(error)}", hint) from None


def suite_batch(suite: SuiteFile) -> BatchFile:
    """Every run x image x pose as one batch job, each followed by an eval job. A job's `--name` is
    `run.image.pose`: what the comparison groups by."""
    defaults = suite.defaults.model_dump(exclude_unset=True)
    jobs = [
        {
            **defaults,
            **options.model_dump(exclude_unset=True),
            "image": image,
            "pose": pose,
            "output_name": f"{run}.{Path(image).stem}.{pose_name}",
        }
        for run, options in suite.runs.items()
        for image in suite.images
        for pose_name, pose in suite.poses.items()
    ]
    return BatchFile(version=BATCH_VERSION, name=suite.name, eval=True, jobs=jobs)


def batch_comparison(conn, settings, batch: str) -> dict[str, Any]:
    """The comparison of a suite's batch: each generation's eval.json (None while missing or failed),
    grouped by the run in its name."""
    import json

    from worldplay_cli.batch import batch_job_ids, resolve_batch
    from worldplay_cli.contract.queue import job_dir
    from worldplay_cli.rows import job_rows

    batch = resolve_batch(conn, batch)
    rows = [row for row in job_rows(conn, batch_job_ids(conn, batch)) if row is not None]
    evals = {row.depends_on[0]: row for row in rows if row.kind == "eval" and row.depends_on}
    labels, results = [], []
    for row in rows:
        if row.kind == "eval":
            continue
        labels.append(row.output_name.split(".")[0] if row.output_name else row.engine or "?")
        child = evals.get(row.id)
        path = job_dir(settings, child.id) / "eval.json" if child is not None and child.status == "finished" else None
        results.append(json.loads(path.read_text()) if path is not None and path.is_file() else None)
    return {"batch": batch, "runs": compare(labels, results)}


def compare(labels: list[str], results: list[dict | None]) -> dict[str, Any]:
    """Per run: the mean of each headline figure over its videos (None where no video has it) and how many
    videos were scored; `results` are the eval.json of each job (None: its generation or eval failed)."""
    runs: dict[str, dict[str, Any]] = {}
    for label, result in zip(labels, results):
        run = runs.setdefault(label, {"videos": 0, "scored": 0, "values": {key: [] for key in HEADLINES}})
        run["videos"] += 1
        if result is None:
            continue
        run["scored"] += 1
        for key, (section, field) in HEADLINES.items():
            value = (result.get(section) or {}).get(field)
            if value is not None:
                run["values"][key].append(value)
    table = {}
    for name, run in runs.items():
        values = run.pop("values")
        table[name] = {**run, **{key: (sum(v) / len(v) if v else None) for key, v in values.items()}}
    return table
