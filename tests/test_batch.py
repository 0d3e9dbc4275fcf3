"""Batches: a grid and a list expanded into jobs with one batch id, bad files refused whole, and a batch
listed, canceled and retried as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worldplay_cli.contract.specs import JOBS_INDEX

BATCH = """
version: 1
name: sweep
eval: true
defaults: {engine: preview, width: 128, height: 80}
grid:
  pose: ["right-4, left-4, hold-3", "w-3"]
  seed: [1, 2]
jobs:
  - {prompt: "a red barn", image: city, pose: "w-3"}
"""


@pytest.fixture
def output_root(worldplay_env) -> Path:
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


def _write(tmp_path: Path, text: str, name: str = "batch.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_grid_and_a_list_expand_into_jobs_with_their_cost(cli, tmp_path):
    code, out, err = cli("batch", _write(tmp_path, BATCH), "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    specs = [job["spec"] for job in plan["jobs"]]
    # the grid's 2 x 2 combinations in order, then the listed job, each over the defaults
    assert [(spec["trajectory"]["source"], spec["seed"]) for spec in specs] == [
        ("right-4, left-4, hold-3", 1),
        ("right-4, left-4, hold-3", 2),
        ("w-3", 1),
        ("w-3", 2),
        ("w-3", 1),
    ]
    assert all((spec["engine"], spec["width"], spec["height"]) == ("preview", 128, 80) for spec in specs)
    assert specs[4]["prompt"] == "a red barn" and specs[4]["image"]["source"].endswith("example_city.png")
    assert plan["eval"] is True
    assert plan["cost"] == {
        "jobs": 5,
        "frames": 2 * 45 + 3 * 13,
        "by_engine": {"preview": {"jobs": 5, "frames": 129, "latent_steps": 0, "gpu_jobs": 0}},
    }
    code, out, _ = cli("batch", _write(tmp_path, BATCH), "--dry-run")
    assert code == 0 and "5 jobs, 129 frames, an eval job after each" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\ngrid: {posee: [w-3]}\n", "grid.posee: unknown key"),
        ("version: 1\nprompts: [a]\n", "prompts: unknown key"),
        ("version: 1\njobs: [{prompt: a, colour: red}]\n", "jobs.0.colour: unknown key"),
        ("version: 2\n", "version: Input should be 1"),
        ("grid: {seed: [1]}\n", "version: Field required"),
        ("version: 1\ngrid: {seed: []}\n", "grid.seed: an empty list makes no jobs"),
        ("version: 1\ngrid: {engine: [preview, nope]}\n", "job 2 (engine=nope): unknown engine 'nope'"),
        ("version: 1\ndefaults: {pose: w-2}\n", "job 1 (pose=w-2): trajectory 'w-2'"),
        ("- just a list\n", "a batch file is a mapping"),
        ("version: [1\n", "not valid YAML/JSON"),
    ],
)
def test_bad_batch_files_are_one_line_errors_and_enqueue_nothing(
    cli, tmp_path, redis_conn, output_root, text, expected
):
    code, out, err = cli("batch", _write(tmp_path, text))
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, err
    assert redis_conn.zcard(JOBS_INDEX) == 0 and not (output_root.exists() and any(output_root.iterdir()))


def test_a_batch_is_listed_canceled_and_retried_as_one(cli, tmp_path, redis_conn):
    code, out, err = cli("batch", _write(tmp_path, BATCH), "--json")
    assert code == 0, err
    submitted = json.loads(out)
    batch = submitted["batch"]
    assert batch.startswith("batch-") and batch.endswith("-sweep") and len(submitted["jobs"]) == 5
    generations = [job["job_id"] for job in submitted["jobs"]]
    evals = [job["eval_job_id"] for job in submitted["jobs"]]

    cli("generate", "--queue", "--engine", "preview", "--pose", "w-3", "--width", "128", "--height", "80")
    code, out, _ = cli("jobs", "list", "--batch", batch[:-3], "--json")  # a unique prefix is enough
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 10 and {row["batch"] for row in listed["jobs"]} == {batch}
    assert {row["id"] for row in listed["jobs"]} == set(generations + evals)
    assert listed["counts"] == {"queued": 5, "deferred": 5}
    deferred = {row["id"]: row["depends_on"] for row in listed["jobs"] if row["status"] == "deferred"}
    assert deferred == {child: [parent] for parent, child in zip(generations, evals)}
    code, out, _ = cli("jobs", "list", "--search", batch, "--json")  # the dashboard's search finds a batch too
    assert {row["id"] for row in json.loads(out)["jobs"]} == set(generations + evals)

    code, out, err = cli("jobs", "cancel", "--batch", batch, "--json")
    assert code == 0, err
    assert {result["job_id"] for result in json.loads(out)} == set(generations + evals)
    code, out, _ = cli("jobs", "list", "--batch", batch, "--json")
    assert json.loads(out)["counts"] == {"canceled": 10}
    code, out, _ = cli("jobs", "list", "--json")
    assert json.loads(out)["total"] == 11  # the job outside the batch was left alone

    code, out, err = cli("jobs", "retry", "--batch", batch, "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [result["status"] for result in results] == ["queued"] * 5 + ["replaced"] * 5
    code, out, _ = cli("jobs", "list", "--batch", batch, "--json")
    counts = json.loads(out)["counts"]
    assert counts == {"queued": 5, "canceled": 5, "deferred": 5}  # the new eval jobs wait for the re-runs

    code, _, err = cli("jobs", "cancel", "--batch", "batch-nope")
    assert code == 2 and "no batch 'batch-nope'" in err and err.count("\n") == 1
    code, _, err = cli("jobs", "cancel")
    assert code == 2 and "--batch" in err


def test_generate_prompts_makes_one_job_per_line(cli, tmp_path):
    prompts = _write(tmp_path, 'a lighthouse\n{"prompt": "a harbour", "seed": 7}\n# a comment\n\n"a barn"\n', "p.txt")
    small = ("--engine", "preview", "--pose", "w-3", "--width", "128", "--height", "80")
    code, out, err = cli("generate", "--prompts", prompts, *small, "--dry-run", "--json")
    assert code == 0, err
    specs = [job["spec"] for job in json.loads(out)["jobs"]]
    assert [(spec["prompt"], spec["seed"], spec["width"]) for spec in specs] == [
        ("a lighthouse", 1, 128),
        ("a harbour", 7, 128),
        ("a barn", 1, 128),
    ]
    code, out, err = cli("generate", "--prompts", prompts, *small, "--json")
    assert code == 0 and len(json.loads(out)["jobs"]) == 3
    bad = _write(tmp_path, '{"prompt": "x", "colour": "red"}\n', "bad.txt")
    code, _, err = cli("generate", "--prompts", bad, *small)
    assert code == 2 and "jobs.0.colour: unknown key" in err and err.count("\n") == 1


def test_the_dashboard_detail_names_the_batch_and_the_parent():
    from rich.console import Console

    from worldplay_cli.rows import JobRow
    from worldplay_cli.tui.dashboard.screens import summary_table
    from worldplay_cli.tui.dashboard.source import JobDetail

    row = JobRow(id="e1", status="deferred", kind="eval", batch="batch-x-sweep", depends_on=["g1"])
    detail = JobDetail(row, None, None, None, [], {}, None, None, None)
    console = Console(width=80, record=True)
    console.print(summary_table(detail, now=0.0))
    text = console.export_text()
    assert "batch-x-sweep" in text and "after" in text and "g1" in text
