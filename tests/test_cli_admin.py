"""`worldplay config`, `worldplay server`, `worldplay jobs` (without workers), `worldplay worker` (supervisor)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spine_util import wait_until
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.specs import JOBS_INDEX
from worldplay_cli.runtime import parse_gpu_sets

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")


def test_config_set_is_typed_checked_and_private(cli, worldplay_env):
    code, out, err = cli("config", "set", "queue.failed_ttl_s", "86400")
    assert code == 0, err
    path = Path(worldplay_env["WORLDPLAY_CONFIG"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "failed_ttl_s = 86400" in path.read_text()
    cli("config", "set", "rewrite.i2v.api_key", "sk-secret")
    code, out, _ = cli("config", "show", "--json")
    shown = json.loads(out)
    assert shown["queue"]["failed_ttl_s"] == 86400
    assert shown["rewrite"]["i2v"]["api_key"] == "********" and "sk-secret" not in out
    assert "password" not in out or "****" in shown["redis_url"]
    code, out, _ = cli("config", "path", "--json")
    assert json.loads(out) == {"path": str(path), "exists": True}


@pytest.mark.parametrize(
    ("key", "value", "message"), [("worker.heartbeat_s", "soon", "valid integer"), ("colour", "red", "colour")]
)
def test_config_set_refuses_bad_values_and_keeps_the_file(cli, worldplay_env, key, value, message):
    code, _, err = cli("config", "set", key, value)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not Path(worldplay_env["WORLDPLAY_CONFIG"]).exists()


def test_server_start_status_stop(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("WORLDPLAY_REDIS_URL")
    monkeypatch.setenv("WORLDPLAY_SERVER__DATA_DIR", str(tmp_path / "embedded"))
    try:
        code, out, err = cli("server", "start", "--json")
        assert code == 0, err
        started = json.loads(out)
        assert started["running"] and started["aof_enabled"] and started["maxmemory_policy"] == "noeviction"
        code, out, _ = cli("server", "status", "--json")
        assert json.loads(out)["pid"] == started["pid"]
    finally:
        code, out, _ = cli("server", "stop", "--json")
    assert json.loads(out) == {"stopped": True}
    code, out, _ = cli("server", "status", "--json")
    assert json.loads(out)["running"] is False


def test_the_first_command_says_it_started_the_embedded_server_and_how_to_stop_it(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("WORLDPLAY_REDIS_URL")
    monkeypatch.setenv("WORLDPLAY_SERVER__DATA_DIR", str(tmp_path / "embedded"))
    try:
        code, _, err = cli("jobs", "list")
        assert code == 0 and "started the embedded Redis server" in err and "`worldplay server stop`" in err, err
        code, _, err = cli("jobs", "list")
        assert code == 0 and "started" not in err
    finally:
        code, out, _ = cli("server", "stop", "--json")
    assert json.loads(out) == {"stopped": True}


def test_server_commands_refuse_when_an_external_redis_is_configured(cli):
    code, _, err = cli("server", "start")
    assert code == 2 and "redis_url is set" in err


def test_jobs_list_filter_page_cancel_retry_rm(cli, redis_conn, worldplay_env):
    ids = []
    for _ in range(5):
        code, out, err = cli("generate", "--queue", *SMALL)
        assert code == 0, err
        ids.append(out.strip())
    code, out, _ = cli("jobs", "cancel", ids[0], "--json")
    assert json.loads(out) == [{"job_id": ids[0], "status": "canceled"}]

    code, out, _ = cli("jobs", "list", "--json", "--limit", "2", "--offset", "1")
    page = json.loads(out)
    assert page["total"] == 5 and page["counts"]["queued"] == 4 and page["counts"]["canceled"] == 1
    assert [row["id"] for row in page["jobs"]] == [ids[3], ids[2]]  # newest first
    code, out, _ = cli("jobs", "list", "--json", "--status", "canceled")
    assert [row["id"] for row in json.loads(out)["jobs"]] == [ids[0]]
    assert json.loads(out)["jobs"][0]["failure"]["kind"] == "canceled"

    code, out, _ = cli("jobs", "logs", ids[0])
    assert "canceled before it started" in out
    code, out, _ = cli("jobs", "retry", ids[0], "--json")
    assert json.loads(out)[0]["status"] == "queued"
    assert redis_conn.lrange("rq:queue:generate", -1, -1) == [ids[0].encode()]

    output_root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    code, out, _ = cli("jobs", "rm", ids[1], "--files", "--json")
    assert code == 0 and json.loads(out)[0]["files_removed"] is True
    assert not (output_root / ids[1]).exists()
    redis_conn.zadd(JOBS_INDEX, {"expired-job": 1.0})  # what an rq record past its TTL leaves behind
    code, out, _ = cli("jobs", "list", "--json")
    assert json.loads(out)["total"] == 4
    assert redis_conn.zscore(JOBS_INDEX, "expired-job") is None
    code, out, _ = cli("jobs", "list", "--json", "--queue", "generate", "--status", "queued")
    assert {row["id"] for row in json.loads(out)["jobs"]} == {ids[0], ids[2], ids[3], ids[4]}
    code, out, _ = cli("jobs", "list", "--json", "--queue", "no-such-queue")
    assert json.loads(out)["total"] == 0

    code, _, err = cli("jobs", "show", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in err
    code, _, err = cli("jobs", "cancel", ids[1])
    assert code == 2 and "no job" in err


def test_resubmit_copies_inputs_into_a_new_job(cli, redis_conn, worldplay_env):
    from worldplay_cli import jobs
    from worldplay_cli.contract.settings import load_settings

    code, out, _ = cli("generate", "--queue", "--prompt", "first", *SMALL)
    old = out.strip()
    settings = load_settings()
    new = jobs.resubmit(redis_conn, settings, old, {"prompt": "second", "seed": 7})
    detail = jobs.job_detail(redis_conn, settings, new)
    assert detail["spec"]["prompt"] == "second" and detail["spec"]["seed"] == 7 and detail["status"] == "queued"
    assert {"input.png", "trajectory.json"} <= set(detail["files"])
    with pytest.raises(BadInput):
        jobs.resubmit(redis_conn, settings, old, {"frames": 17})


@pytest.mark.parametrize(
    ("text", "sets"),
    [
        ("0,1", [(0,), (1,)]),
        ("0-3", [(0, 1, 2, 3)]),
        ("0+1,2+3", [(0, 1), (2, 3)]),
        ("4-7,0", [(4, 5, 6, 7), (0,)]),
        (None, []),
    ],
)
def test_gpu_sets(text, sets):
    assert parse_gpu_sets(text) == sets


@pytest.mark.parametrize("text", ["a", "0,0", "3-1", "0-1,1", "-1", "0,,1"])
def test_bad_gpu_sets(text):
    with pytest.raises(BadInput):
        parse_gpu_sets(text)


@pytest.mark.slow
def test_worker_command_runs_one_worker_per_gpu_set_and_stops_them_within_seconds_every_time(cli, worldplay_env):
    """Ten runs of a supervisor of two workers: one worker per GPU set, each with only its GPUs visible,
    all gone within a few seconds of SIGTERM.

    The race the repetition guards: a worker's command listener that saw its UNSUBSCRIBE answered before its
    stop flag waited out rq's 60 s listen timeout, and the supervisor waited for it (2 stops in 10 hung).
    """

    def two_workers():
        code, out, _ = cli("jobs", "workers", "--json")
        rows = json.loads(out) if code == 0 else []
        return rows if len(rows) == 2 else None

    for cycle in range(10):
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "worldplay_cli", "worker", "--gpus", "0,1", "--queue", "gpu1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            rows = wait_until(two_workers, 60, interval=0.1, what="two workers")
            assert sorted(row["gpus"] for row in rows) == ["0", "1"]
            assert all(row["queues"] == ["gpu1"] for row in rows)
            for row in rows:
                environ = Path(f"/proc/{row['pid']}/environ").read_bytes().split(b"\0")
                assert f"CUDA_VISIBLE_DEVICES={row['gpus']}".encode() in environ or sys.platform != "linux"
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pytest.fail(f"cycle {cycle}: the supervisor did not stop within 8 s of SIGTERM")
            assert supervisor.returncode == 0
            assert not any(os.path.exists(f"/proc/{row['pid']}") for row in rows)
            code, out, _ = cli("jobs", "workers", "--json")
            assert json.loads(out) == []
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait()
