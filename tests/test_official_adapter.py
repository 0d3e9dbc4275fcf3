"""The official engine against a stub `hyvideo/generate.py` in a temporary checkout (real torchrun, real
worker, real Redis, real mp4): argument mapping, progress, collection, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from official_util import SMALL, STUB, fake_model_dir
from spine_util import wait_until
from worker.engines.official import ProgressParser, console_lines, official_arguments, torchrun_command
from worldplay_cli.contract.queue import fetch_job
from worldplay_cli.contract.specs import JobSpec


def spec(**changes) -> JobSpec:
    data = {
        "prompt": "a street", "image": {"source": "x.png", "sha256": "0" * 64, "width": 64, "height": 32},
        "trajectory": {"source": "w-3", "num_latents": 4, "num_frames": 13, "sha256": "0" * 64},
        "engine": "preview", "variant": "ar-distilled", "frames": 13, "steps": 4, "guidance": 1.0,
        "width": 64, "height": 32, "timeout_s": 60,
    }  # fmt: skip
    return JobSpec.model_validate({**data, **changes})


def flags(arguments: list[str]) -> dict[str, str]:
    return dict(zip(arguments[::2], arguments[1::2]))


def test_distilled_arguments_spell_out_every_trap():
    arguments = official_arguments(spec(), Path("/m"), Path("/m/ar_distilled_action_model/x.safetensors"),
                                   Path("/job/input.png"), Path("/run/pose.json"), Path("/run/output"))  # fmt: skip
    given = flags(arguments)
    assert given["--few_step"] == "true" and given["--model_type"] == "ar"
    assert given["--sr"] == "false" and given["--save_pre_sr_video"] == "false" and given["--rewrite"] == "false"
    assert given["--num_inference_steps"] == "4" and given["--video_length"] == "13"
    assert (given["--height"], given["--width"]) == ("32", "64")
    assert given["--pose"] == "/run/pose.json" and given["--output_path"] == "/run/output"
    assert given["--action_ckpt"] == "/m/ar_distilled_action_model/x.safetensors"
    assert given["--offloading"] == "true"


def test_bidirectional_arguments_and_profiles():
    bi = spec(variant="bi", steps=50, guidance=6.0,
              trajectory={"source": "w-15", "num_latents": 16, "num_frames": 61, "sha256": "0" * 64}, frames=61)  # fmt: skip
    given = flags(
        official_arguments(bi, Path("/m"), Path("/c"), Path("/i"), Path("/p.json"), Path("/o"), "group-offload")
    )
    assert given["--model_type"] == "bi" and given["--few_step"] == "false" and given["--sr"] == "false"
    assert given["--offloading"] == "true" and given["--group_offloading"] == "true"
    assert (
        flags(official_arguments(bi, Path("/m"), Path("/c"), Path("/i"), Path("/p.json"), Path("/o"), "resident"))[
            "--offloading"
        ]
        == "false"
    )


def test_super_resolution_arguments_are_spelled_out():
    """--sr and --save_pre_sr_video are always explicit (the official --sr defaults to true); the 480p size
    goes in as --width/--height and the official script maps it to the 720p bucket itself."""
    sr = spec(engine="official", sr=True, keep_pre_sr=True, width=832, height=480)
    given = flags(official_arguments(sr, Path("/m"), Path("/c"), Path("/i"), Path("/p.json"), Path("/o")))
    assert given["--sr"] == "true" and given["--save_pre_sr_video"] == "true"
    assert (given["--width"], given["--height"], given["--resolution"]) == ("832", "480", "480p")
    without = spec(engine="official", sr=True, width=832, height=480)
    assert (
        flags(official_arguments(without, Path("/m"), Path("/c"), Path("/i"), Path("/p.json"), Path("/o")))[
            "--save_pre_sr_video"
        ]
        == "false"
    )


def test_torchrun_command_keeps_rank_logs_and_no_restarts():
    command = torchrun_command("/py", 2, 29500, Path("/logs"), ["--prompt", "x"])
    assert command[:3] == ["/py", "-m", "torch.distributed.run"]
    given = flags(command[3 : command.index("hyvideo/generate.py")])
    assert given["--nproc_per_node"] == "2" and given["--max-restarts"] == "0"
    assert given["--log-dir"] == "/logs" and given["--redirects"] == "3"
    assert command[-3:] == ["hyvideo/generate.py", "--prompt", "x"]


def test_progress_parser_counts_chunks_from_tqdm_redraws():
    parser = ProgressParser(steps=4, num_chunks=2)
    assert parser.feed(b"\r  0%|   | 0/4 [00:00<?, ?it/s]\r 25%|#  | 1/4 [00:00<00:01, 3it/s]")
    assert (parser.chunk, parser.step, parser.done) == (0, 1, 1)
    parser.feed(b"\r100%|###| 4/4 [00:01<00:00, 3it/s]\r100%|###| 4/4 [00:01<00:00, 3it/s]\n")
    assert (parser.chunk, parser.done) == (0, 4)
    parser.feed(b"loading 1/1 [ other bar\r  0%|   | 0/4 [00:00<?, ?it/s]\r 50%|## | 2/4 [")
    assert (parser.chunk, parser.step, parser.done) == (1, 2, 6)


def test_console_lines_drop_progress_redraws_and_rank_prefixes():
    merged = "\r  0%|    | 0/4 [00:00<?, ?it/s][default0]:HY-World 1.5 loading from:  /m/x.safetensors"
    assert console_lines(merged) == ["HY-World 1.5 loading from:  /m/x.safetensors"]
    assert console_lines("[default0]:Saved video to: /o/gen.mp4") == ["Saved video to: /o/gen.mp4"]
    assert console_lines("\r100%|####| 4/4 [00:01<00:00, 3.1it/s]") == []
    assert console_lines("W1122 torchrun warning") == ["W1122 torchrun warning"]


@pytest.fixture
def official_env(worldplay_env, tmp_path, monkeypatch):
    repo = tmp_path / "HY-WorldPlay"
    (repo / "hyvideo").mkdir(parents=True)
    (repo / "hyvideo" / "generate.py").write_text(STUB)
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("WORLDPLAY_OFFICIAL_REPO", str(repo))
    monkeypatch.setenv("STUB_RECORD_DIR", str(record))
    models = fake_model_dir(tmp_path / "models")
    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(models))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return {"repo": repo, "record": record, "outputs": Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]), "models": models}


def _enqueue(cli, *args) -> str:
    code, out, err = cli("generate", "--queue-name", "official", "--engine", "official", *SMALL, *args)
    assert code == 0, err
    return out.strip()


@pytest.mark.slow
def test_official_jobs_through_a_real_worker(cli, redis_conn, official_env, start_worker):
    good = _enqueue(cli, "--prompt", "a quiet street", "--gpus", "2")
    oom = _enqueue(cli, "--prompt", "oom please", "--seed", "7")
    start_worker("official")
    for job_id in (good, oom):
        wait_until(lambda job_id=job_id: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"),
                   120, what=f"job {job_id}")  # fmt: skip

    # 1. two real ranks under torchrun, run in the checkout, with the mapped arguments
    job = fetch_job(redis_conn, good)
    assert job.get_status().value == "finished", job.meta.get("failure")
    ranks = [json.loads((official_env["record"] / f"argv-seed1-rank{rank}.json").read_text()) for rank in range(2)]
    assert {rank["world_size"] for rank in ranks} == {"2"}
    assert Path(ranks[0]["cwd"]) == official_env["repo"]
    given = flags(ranks[0]["argv"])
    assert given["--few_step"] == "true" and given["--sr"] == "false" and given["--prompt"] == "a quiet street"
    assert given["--pose"].endswith("/official/pose.json") and given["--output_path"].endswith("/official/output")
    # 2. progress parsed from the bars, the video collected, the run described in the manifest
    progress = job.meta["progress"]
    assert progress["stage"] == "done"
    manifest = json.loads((official_env["outputs"] / good / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["video"]["frames"] == 13
    assert manifest["engine"]["name"] == "official" and manifest["engine"]["nproc"] == 2
    assert manifest["timings"]["stages"].keys() >= {"load", "generate", "collect"}
    log = (official_env["outputs"] / good / "log.txt").read_text()
    assert "official: HY-World 1.5 loading from:" in log and "Saved video to:" in log
    assert (official_env["outputs"] / good / "video.mp4").stat().st_size > 0

    # 3. an OOM inside the official script is classified, with a hint
    failure = fetch_job(redis_conn, oom).meta["failure"]
    assert failure["kind"] == "oom" and "CUDA out of memory" in failure["message"]
    assert "the group-offload memory profile" in failure["hint"]


def test_checkout_is_the_workers_setting_or_one_the_worker_allows(worldplay_env, monkeypatch, tmp_path):
    from worker.engines.official import official_repo_for
    from worker.job import JobFailed
    from worldplay_cli.contract.settings import load_settings

    assert official_repo_for(spec(), load_settings()) is None
    monkeypatch.setenv("WORLDPLAY_OFFICIAL_REPO", str(tmp_path / "HY-WorldPlay"))
    assert official_repo_for(spec(), load_settings()) == tmp_path / "HY-WorldPlay"
    with pytest.raises(JobFailed) as refused:
        official_repo_for(spec(official_repo=str(tmp_path / "mine")), load_settings())
    assert refused.value.failure.kind == "refused" and "worker.official_repos" in refused.value.failure.hint
    monkeypatch.setenv("WORLDPLAY_WORKER__OFFICIAL_REPOS", str(tmp_path / "mine"))
    assert official_repo_for(spec(official_repo=str(tmp_path / "mine")), load_settings()) == tmp_path / "mine"


@pytest.mark.slow
def test_official_sr_job_collects_the_720p_and_480p_videos(cli, redis_conn, official_env, start_worker):
    """--sr --keep-pre-sr: the official gen_sr.mp4 becomes video.mp4 (720p bucket), gen.mp4 video_480p.mp4;
    the SR loop's bar is reported as its own stage."""
    # the SR weights must be in the model directory (the worker checks before running the script)
    models = official_env["models"]
    for directory in ("transformer/720p_sr_distilled", "upsampler/720p_sr_distilled"):
        (models / directory).mkdir(parents=True)
        (models / directory / "config.json").write_text("{}")
    job_id = _enqueue(cli, "--prompt", "a quiet street", "--width", "832", "--height", "480", "--sr", "--keep-pre-sr")
    start_worker("official")
    wait_until(lambda: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"), 120,
               what=f"job {job_id}")  # fmt: skip
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "finished", job.meta.get("failure")
    given = flags(json.loads((official_env["record"] / "argv-seed1-rank0.json").read_text())["argv"])
    assert given["--sr"] == "true" and given["--save_pre_sr_video"] == "true"
    directory = official_env["outputs"] / job_id
    manifest = json.loads((directory / "manifest.json").read_text())
    assert (manifest["video"]["width"], manifest["video"]["height"]) == (1248, 720)
    assert [(video["file"], video["width"], video["height"]) for video in manifest["videos"]] == [
        ("video_480p.mp4", 832, 480)
    ]
    assert {"generate", "super-resolution", "collect"} <= set(manifest["timings"]["stages"])
