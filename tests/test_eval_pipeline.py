"""Pipelines through a real worker: an eval job that depends on a generation (rq dependencies through
`contract.queue.enqueue(depends_on=...)`), and children of a parent that fails or is canceled failing with
the parent's reason instead of waiting for ever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_util import wait_until
from worldplay_cli.contract.queue import fetch_job

POSE = "right-4, left-4, hold-3"  # 12 latents, 45 frames: a turn and back
SMALL = ("--pose", POSE, "--width", "128", "--height", "80")


def _status(conn, job_id: str) -> str:
    return fetch_job(conn, job_id).get_status().value


def _submit(cli, *args: str) -> str:
    code, out, err = cli(*args)
    assert code == 0, err
    return out.strip()


@pytest.fixture
def output_root(worldplay_env) -> Path:
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


def test_an_eval_job_runs_after_its_generation_and_scores_it(cli, redis_conn, output_root, start_worker):
    submitted = json.loads(_submit(cli, "generate", "--queue", "--eval", "--json", *SMALL))
    parent, child = submitted["job_id"], submitted["eval_job_id"]
    assert _status(redis_conn, child) == "deferred"  # waits for the generation
    code, out, _ = cli("jobs", "show", child, "--json")
    assert code == 0 and json.loads(out)["depends_on"] == [parent]
    start_worker("generate", "--burst")
    wait_until(lambda: _status(redis_conn, child) in ("finished", "failed"), 90, what="the eval job")
    assert _status(redis_conn, parent) == "finished"
    assert _status(redis_conn, child) == "finished", fetch_job(redis_conn, child).meta
    result = json.loads((output_root / child / "eval.json").read_text())
    assert result["frames"] == 45 and result["size"] == [128, 80]
    assert result["camera_following"]["R_dist"] < 1.5 and result["camera_following"]["untracked"] == 0
    assert result["revisit"]["count"] >= 1
    assert fetch_job(redis_conn, child).return_value()["target"] == parent
    # the same evaluation in the foreground, by job id: eval.json lands in the job's own directory
    code, out, err = cli("eval", parent, "--json")
    assert code == 0, err
    here = json.loads((output_root / parent / "eval.json").read_text())
    assert json.loads(out) == here and here["camera_following"] == result["camera_following"]


def test_eval_after_a_foreground_generation_is_refused(cli):
    code, out, err = cli("generate", "--eval", *SMALL)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--queue" in err


def test_children_of_a_failed_or_canceled_parent_fail_with_its_reason(cli, redis_conn, output_root, start_worker):
    failing = _submit(cli, "generate", "--queue", *SMALL)
    (output_root / failing / "input.png").unlink()  # its worker will refuse it: the input is gone
    canceled = _submit(cli, "generate", "--queue", *SMALL)
    children = {parent: _submit(cli, "eval", parent, "--queue") for parent in (failing, canceled)}
    code, _, err = cli("jobs", "cancel", canceled)
    assert code == 0, err
    start_worker("generate")
    wait_until(
        lambda: all(_status(redis_conn, child) == "failed" for child in children.values()), 60, what="both children"
    )
    assert _status(redis_conn, failing) == "failed" and _status(redis_conn, canceled) == "canceled"
    for parent, child in children.items():
        failure = fetch_job(redis_conn, child).meta["failure"]
        assert failure["kind"] == "parent_failed" and parent in failure["message"], failure
        assert parent in (output_root / child / "log.txt").read_text()
    assert "input" in fetch_job(redis_conn, children[failing]).meta["failure"]["message"]  # the parent's reason
    assert "canceled" in fetch_job(redis_conn, children[canceled]).meta["failure"]["message"]
