"""`worldplay generate` input checks: every bad request is one line, exit != 0, and leaves no trace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")


def _nothing_enqueued(conn: redis.Redis, output_root: Path) -> bool:
    no_dirs = not output_root.exists() or not any(output_root.iterdir())
    return conn.zcard(JOBS_INDEX) == 0 and conn.scard(QUEUES_SET) == 0 and no_dirs


@pytest.fixture
def output_root(worldplay_env) -> Path:
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


def _bad_image(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"{kind}.png"
    if kind == "missing":
        return str(path)
    if kind == "garbage":
        path.write_bytes(b"this is not an image at all")
    if kind == "unreadable":
        path.write_bytes(Path(__file__).read_bytes())
        path.chmod(0)
    if kind == "directory":
        path.mkdir()
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--pose", "w-4"), "ar-distilled needs a multiple of 4 latents"),
        (("--pose", "w-0"), "w-0"),
        (("--pose", "fly-3"), "fly"),
        (("--pose", "w-31", "--frames", "121"), "121 frames"),
        (("--pose", "w-35", "--variant", "bi"), "bi needs a multiple of 16 latents"),
        (("--engine", "warp-drive"), "unknown engine 'warp-drive'"),
        (("--variant", "ar-turbo"), "unknown variant 'ar-turbo'"),
        (("--width", "100", "--height", "64"), "multiple of 16"),
        (("--width", "64"), "both --width and --height"),
        (("--seed", "-5"), "seed"),
        (("--memory-profile", "lowvram"), "--memory-profile 'lowvram'"),
        (("--timeout", "0"), "--timeout 0: "),
        (("--gpus", "0"), "--gpus 0: "),
        (("--name", "a/b"), "--name 'a/b': use only letters"),
        (("--engine", "native"), "engine native needs a prompt"),
        (("--wait",), "--wait only makes sense with --queue"),
    ],
)
def test_bad_requests_fail_before_anything_is_enqueued(cli, redis_conn, output_root, args, message):
    code, out, err = cli("generate", "--queue", *args) if "--wait" not in args else cli("generate", *args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert _nothing_enqueued(redis_conn, output_root)


@pytest.mark.parametrize("kind", ["missing", "garbage", "directory"] + ([] if os.geteuid() == 0 else ["unreadable"]))
def test_bad_images_are_refused(cli, redis_conn, output_root, tmp_path, kind):
    code, _, err = cli("generate", "--queue", "--image", _bad_image(tmp_path, kind), *SMALL)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _nothing_enqueued(redis_conn, output_root)


def test_bad_trajectory_file_is_refused(cli, redis_conn, output_root, tmp_path):
    path = tmp_path / "poses.json"
    path.write_text(json.dumps({"0": {"extrinsic": [[1, 0, 0, 0]], "K": [[1, 0, 0]]}}))
    code, _, err = cli("generate", "--queue", "--pose", str(path))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _nothing_enqueued(redis_conn, output_root)


def test_unwritable_output_root_is_refused(cli, redis_conn, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = cli("generate", "--queue", "--output-root", str(blocker / "outputs"), *SMALL)
    assert code == 2 and "output root" in err and err.count("\n") == 1, err
    assert redis_conn.zcard(JOBS_INDEX) == 0


def test_unreachable_redis_is_refused_with_the_url_masked(cli, output_root):
    code, _, err = cli("generate", "--queue", "--redis-url", "redis://:hunter2@127.0.0.1:1/0", *SMALL)
    assert code == 1 and "cannot reach Redis at redis://:****@127.0.0.1:1/0" in err, err
    assert "hunter2" not in err and err.count("\n") == 1
    assert not output_root.exists() or not any(output_root.iterdir())


def test_required_rewrite_without_an_endpoint_enqueues_nothing(cli, redis_conn, output_root):
    code, _, err = cli("generate", "--queue", "--prompt", "a harbour", "--rewrite-required", *SMALL)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _nothing_enqueued(redis_conn, output_root)


def test_dry_run_prints_the_resolved_spec_and_touches_nothing(cli, redis_conn, output_root):
    code, out, err = cli("generate", "--dry-run", "--prompt", "a harbour", *SMALL)
    assert code == 0, err
    spec = json.loads(out)
    assert spec["trajectory"]["num_latents"] == 4 and spec["frames"] == 13
    assert (spec["width"], spec["height"]) == (64, 32)
    assert (spec["steps"], spec["guidance"]) == (4, 1.0)  # the ar-distilled recipe
    assert _nothing_enqueued(redis_conn, output_root)


def test_bundled_examples_are_chosen_by_name(cli):
    sources = {}
    for name in ("meadow", "city"):
        code, out, err = cli("generate", "--dry-run", "--prompt", "a harbour", "--image", name, *SMALL)
        assert code == 0, err
        sources[name] = json.loads(out)["image"]["source"]
    assert sources["meadow"].endswith("example.png") and sources["city"].endswith("example_city.png")


def test_worker_side_options_are_carried_in_the_spec(cli):
    code, out, err = cli(
        "generate",
        "--dry-run",
        "--engine",
        "native",
        "--prompt",
        "a harbour",
        "--model-dir",
        "/models/hy",
        "--memory-profile",
        "low-vram",
        *SMALL,
    )
    assert code == 0, err
    spec = json.loads(out)
    assert (spec["engine"], spec["model_dir"], spec["memory_profile"]) == ("native", "/models/hy", "low-vram")


def test_queue_name_alone_enqueues_there_prints_the_job_id_and_stores_the_inputs(cli, redis_conn, output_root):
    from worldplay_cli.contract.queue import fetch_job

    code, out, err = cli("generate", "--queue-name", "gpu-big", "--prompt", "a harbour", *SMALL)  # implies --queue
    assert code == 0, err
    job_id = out.strip()
    job = fetch_job(redis_conn, job_id)
    assert job.get_status().value == "queued" and job.origin == "gpu-big"
    assert job.func_name == "worker.tasks.generate" and job.args[0]["prompt"] == "a harbour"
    directory = output_root / job_id
    assert sorted(p.name for p in directory.iterdir()) == ["input.png", "spec.json", "trajectory.json"]
    official = json.loads((directory / "trajectory.json").read_text())
    assert sorted(official, key=int) == ["0", "1", "2", "3"] and set(official["0"]) == {"extrinsic", "K"}
    # Redis holds a small spec, never the image.
    assert len(redis_conn.hget(f"rq:job:{job_id}", "data")) < 4000


def test_bare_queue_uses_the_default_queue(cli, redis_conn):
    code, out, err = cli("generate", "--queue", "--json", *SMALL)
    assert code == 0, err
    assert json.loads(out)["queue"] == "generate"
    assert redis_conn.llen("rq:queue:generate") == 1


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("--queue", "fast"), "--queue is a plain flag now: use --queue-name fast"),
        (("--queue=fast",), "--queue is a plain flag now: use --queue-name fast"),
        (("--queue", "--rewrite", "required"), "--rewrite is a plain flag now: use --rewrite-required"),
        (("--queue", "--rewrite=required"), "--rewrite is a plain flag now: use --rewrite-required"),
        (("--queue", "--rewrite", "best-effort"), "--rewrite is a plain flag now: use --rewrite)"),
    ],
)
def test_old_spellings_of_queue_and_rewrite_name_the_new_ones(cli, redis_conn, output_root, args, hint):
    code, out, err = cli("generate", "--prompt", "a harbour", *args, *SMALL)
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and f"(hint: {hint}" in err and err.count("\n") == 1, err
    assert _nothing_enqueued(redis_conn, output_root)


def test_rewrite_happens_before_enqueue_and_is_recorded_without_the_key(cli, redis_conn, output_root, monkeypatch):
    from fake_openai import FakeOpenAI, Reply
    from worldplay_cli.contract.queue import fetch_job

    with FakeOpenAI(api_key="sk-secret-123") as fake:
        monkeypatch.setenv("I2V_REWRITE_BASE_URL", fake.base_url)
        monkeypatch.setenv("I2V_REWRITE_MODEL_NAME", "fake-rewriter")
        monkeypatch.setenv("WORLDPLAY_REWRITE__I2V__API_KEY", "sk-secret-123")
        fake.reply(Reply(content="<think>hm</think>A quiet harbour at dawn, boats moored along the pier."))
        code, out, err = cli("generate", "--queue", "--rewrite", "--prompt", "a harbour", *SMALL)
        assert code == 0, err
        assert len(fake.chat_requests()) == 1  # the image-to-video endpoint, once, before enqueue

    spec = fetch_job(redis_conn, out.strip()).args[0]
    assert spec["prompt"] == "A quiet harbour at dawn, boats moored along the pier."
    assert spec["rewrite"]["policy"] == "best-effort"
    assert spec["rewrite"]["original"] == "a harbour" and spec["rewrite"]["model"] == "fake-rewriter"
    assert spec["rewrite"]["prompt_version"] and spec["rewrite"]["changed"]
    stored = (output_root / out.strip() / "spec.json").read_text() + json.dumps(spec)
    assert "sk-secret-123" not in stored


def test_best_effort_rewrite_warns_and_keeps_the_prompt_when_the_endpoint_fails(cli, redis_conn, monkeypatch):
    from fake_openai import FakeOpenAI, Reply
    from worldplay_cli.contract.queue import fetch_job

    with FakeOpenAI() as fake:
        monkeypatch.setenv("I2V_REWRITE_BASE_URL", fake.base_url)
        monkeypatch.setenv("I2V_REWRITE_MODEL_NAME", "fake-rewriter")
        fake.reply(Reply(400))
        code, out, err = cli("generate", "--queue", "--rewrite", "--prompt", "a harbour", *SMALL)
    assert code == 0, err
    assert "HTTP 400" in err and "kept the original prompt" in err
    spec = fetch_job(redis_conn, out.strip()).args[0]
    assert spec["prompt"] == "a harbour" and spec["rewrite"]["changed"] is False


def test_required_rewrite_fails_the_submission_when_the_endpoint_fails(cli, redis_conn, output_root, monkeypatch):
    from fake_openai import FakeOpenAI, Reply
    from worldplay_cli.contract.queue import fetch_job

    with FakeOpenAI() as fake:
        monkeypatch.setenv("I2V_REWRITE_BASE_URL", fake.base_url)
        monkeypatch.setenv("I2V_REWRITE_MODEL_NAME", "fake-rewriter")
        fake.reply(Reply(400))
        code, out, err = cli("generate", "--queue", "--rewrite-required", "--prompt", "a harbour", *SMALL)
        assert code == 1 and out == "", err
        assert err.startswith("error: ") and "HTTP 400" in err and err.count("\n") == 1, err
        assert _nothing_enqueued(redis_conn, output_root)

        fake.reply(Reply(content="A quiet harbour at dawn."))  # the same command, the endpoint working again
        code, out, err = cli("generate", "--queue", "--rewrite-required", "--prompt", "a harbour", *SMALL)
    assert code == 0, err
    spec = fetch_job(redis_conn, out.strip()).args[0]
    assert spec["prompt"] == "A quiet harbour at dawn." and spec["rewrite"]["policy"] == "required"
