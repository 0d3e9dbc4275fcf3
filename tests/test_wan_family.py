"""The WAN-5B family as a first-class family: its registry records, its download plan and layout, doctor,
bad input, and jobs through a real worker and Redis with the native engine (tiny WAN model, text-to-video
and image-to-video) and with the official engine (a stub `wan/generate.py` checkout)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_hub import FakeHub, add_worldplay_repos
from official_util import WAN_STUB, fake_wan_model_dir
from spine_util import wait_until
from worldplay_cli.contract import layout, variants
from worldplay_cli.contract.queue import fetch_job

SMALL = ("--prompt", "a red car", "--pose", "w-3", "--width", "64", "--height", "32")  # 4 latents, 13 frames


@pytest.fixture(scope="module")
def tiny_wan_dir(tmp_path_factory) -> Path:
    """`worldplay dev tiny-model --family wan`, through the CLI (it writes in a subprocess)."""
    root = tmp_path_factory.mktemp("tiny-wan") / "model"
    command = [sys.executable, "-m", "worldplay_cli", "dev", "tiny-model", str(root), "--family", "wan", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    written = json.loads(completed.stdout)
    assert written["variants"] == ["wan-distilled", "wan-ar"] and written["family"] == "wan"
    assert json.loads((root / layout.TINY_MARKER).read_text())["family"] == "wan"
    return root


def test_the_wan_variants_are_one_family_of_four_latent_chunks():
    from trajectories.latents import CHUNK

    distilled, autoregressive = variants.get("wan-distilled"), variants.get("wan-ar")
    assert distilled.family is autoregressive.family is variants.FAMILIES["wan"]
    assert (distilled.steps, distilled.guidance, distilled.few_step, distilled.cfg_branches) == (4, 1.0, True, 1)
    assert CHUNK["wan-distilled"] == CHUNK["wan-ar"] == distilled.chunk_latents == 4
    assert not distilled.super_resolution and distilled.plays_live and autoregressive.plays_live
    assert layout.action_checkpoint("wan-distilled") == "wan_distilled_model/model.pt"
    assert layout.action_checkpoint("wan-ar") == "wan_transformer/diffusion_pytorch_model.safetensors"
    assert not variants.FAMILIES["wan"].image_required and variants.FAMILIES["hunyuan"].image_required


def test_the_memory_profiles_estimate_the_wan_family_from_its_own_figures():
    from worker.runtime.memory_profiles import GB, choose_profile, estimate_stages

    wan = estimate_stages("offload", "wan-distilled", 1)
    # 10.6 GB weights + 1.4 GB VAE + 13.0 GB context K/V + 8 GB activations (README: how they are made)
    assert abs(wan["denoise"] / GB - 33.0) < 0.5 and abs(wan["encode"] / GB - (11.4 + 1.4 + 10.6)) < 0.1
    assert estimate_stages("offload", "ar-distilled", 1)["denoise"] > 2 * wan["denoise"]
    assert choose_profile("auto", "wan-distilled", 1, 48 * GB).profile == "offload"
    assert choose_profile("auto", "ar-distilled", 1, 48 * GB).profile == "low-vram"


def _main(*args: str) -> int:
    from worldplay_cli.app import main

    try:
        main(list(args))
    except SystemExit as exit:
        return exit.code or 0
    return 0


def test_the_download_plans_exactly_the_wan_pieces_and_lays_them_out(tmp_path, monkeypatch, capsys):
    with FakeHub() as hub:
        add_worldplay_repos(hub)
        for name, value in {
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
            "WORLDPLAY_HOME": str(tmp_path / "wp"),
            "WORLDPLAY_CONFIG": str(tmp_path / "config.toml"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "WORLDPLAY_MODEL_DIR"):
            monkeypatch.delenv(name, raising=False)
        models = tmp_path / "models"
        # 1. the plan: the base without its transformer, the WAN config, the distilled checkpoint; nothing else
        assert _main("download", "wan-distilled", "--dry-run", "--json", "--model-dir", str(models)) == 0
        plan = json.loads(capsys.readouterr().out)
        pieces = {piece["name"]: piece for piece in plan["pieces"]}
        assert list(pieces) == ["wan-transformer-config", "wan2.2-ti2v-5b", "action-wan-distilled"]
        base = hub.repos["Wan-AI/Wan2.2-TI2V-5B-Diffusers"].files
        wanted = [path for path in base if not path.startswith(("transformer/", "README"))]
        assert pieces["wan2.2-ti2v-5b"]["files"] == len(wanted) == 9
        assert pieces["wan2.2-ti2v-5b"]["total_bytes"] == sum(len(base[path]) for path in wanted)
        assert pieces["action-wan-distilled"]["files"] == pieces["wan-transformer-config"]["files"] == 1
        # 2. the download: the WAN layout, every file the model-directory check looks for
        assert _main("download", "wan-distilled", "--json", "--model-dir", str(models)) == 0, capsys.readouterr()
        capsys.readouterr()
    from worker.pipeline.model_dir import resolve_model_dir

    paths = resolve_model_dir(models, "wan-distilled")
    assert paths.action_checkpoint == models / "wan_distilled_model" / "model.pt"
    assert (models / layout.WAN_VAE_DIR / "diffusion_pytorch_model.safetensors").is_file()
    assert not (models / layout.WAN_BASE_DIR / "transformer").exists()
    assert not (models / "wan_transformer" / "diffusion_pytorch_model.safetensors").exists()


def test_doctor_reports_the_wan_pieces_and_recommends_one_gpu_per_job(tmp_path):
    from worker.doctor import probe_model_dir, recommend

    models = fake_wan_model_dir(tmp_path / "models")
    (models / layout.action_checkpoint("wan-ar")).unlink()
    report = probe_model_dir(models)["variants"]
    assert report["wan-distilled"] == {"family": "wan", "ready": True, "missing": [], "fix": None}
    assert report["wan-ar"]["family"] == "wan" and not report["wan-ar"]["ready"]
    assert report["wan-ar"]["missing"] == [f"wan-ar action checkpoint ({layout.action_checkpoint('wan-ar')})"]
    assert report["wan-ar"]["fix"] == "worldplay download wan-ar"
    assert not report["ar-distilled"]["ready"] and report["ar-distilled"]["family"] == "hunyuan"
    gpus = [{"memory_bytes": 80 * 10**9}] * 4
    advice = recommend(
        {"installed": True, "gpus": gpus, "nccl_available": True}, {"installed": True}, ["wan-distilled"]
    )
    assert advice["variant"] == "wan-distilled" and advice["gpus_per_job"] == 1
    assert advice["worker_command"] == "worldplay worker --gpus 0,1,2,3"
    assert not any("--sr" in note for note in advice["notes"])


def test_bad_wan_requests_are_one_line_errors_with_a_hint(cli, worldplay_env):
    from pydantic import ValidationError

    from worldplay_cli.contract.specs import JobSpec

    native = ("generate", "--dry-run", "--engine", "native", "--variant", "wan-distilled")
    code, _, err = cli(*native, "--image", "meadow", *SMALL[:4], "--width", "48", "--height", "32")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "multiples of 32, got 48x32" in err and "--width 1280 --height 704" in err
    code, _, err = cli("generate", "--dry-run", "--engine", "native", "--guidance", "5", "--variant", "wan-ar", *SMALL)
    assert code == 2 and "without classifier-free guidance" in err and "--guidance" in err
    code, _, err = cli("play", "--variant", "bi", "--engine", "native", "--prompt", "x")
    assert code == 2 and "cannot play live" in err and "ar-distilled" in err and "wan-distilled" in err
    code, _, err = cli("generate", "--dry-run", "--variant", "wan-distilled", "--prompt", "a red car")
    assert code == 2 and "preview engine re-projects a reference image" in err and "--engine native" in err
    code, out, _ = cli(
        "generate", "--dry-run", "--json", "--engine", "native", "--variant", "wan-distilled", "--prompt", "a red car"
    )
    spec = json.loads(out)
    assert code == 0 and spec["image"] is None and (spec["width"], spec["height"]) == (1280, 704)
    # a HunyuanVideo job without an image, or a preview job without one, is refused by the contract itself
    for engine, variant in (("native", "ar-distilled"), ("preview", "wan-distilled")):
        data = {**spec, "engine": engine, "variant": variant, "width": 64, "height": 32}
        with pytest.raises(ValidationError, match="reference image"):
            JobSpec.model_validate(data)


def _enqueue(cli, *args: str) -> str:
    code, out, err = cli("generate", "--queue", "--json", *args)
    assert code == 0, err
    return json.loads(out)["job_id"]


def _finished(redis_conn, job_ids, timeout: float) -> None:
    for job_id in job_ids:
        wait_until(
            lambda job_id=job_id: fetch_job(redis_conn, job_id).get_status().value in ("finished", "failed"),
            timeout,
            what=f"job {job_id}",
        )


@pytest.mark.slow
def test_native_wan_jobs_text_and_image_to_video_through_a_real_worker(
    cli, redis_conn, worldplay_env, start_worker, tiny_wan_dir, monkeypatch
):
    from worker.video import read_video_info

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(tiny_wan_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    native = ("--engine", "native", "--variant", "wan-distilled", *SMALL)
    text_only = _enqueue(cli, *native)
    with_image = _enqueue(cli, *native, "--image", "meadow", "--hud", "--seed", "3")
    worker = start_worker("generate")
    _finished(redis_conn, (text_only, with_image), 240)
    outputs = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    manifests = [json.loads((outputs / job_id / "manifest.json").read_text()) for job_id in (text_only, with_image)]
    assert [manifest["status"] for manifest in manifests] == ["finished"] * 2, worker.log_path.read_text()
    for job_id, manifest in zip((text_only, with_image), manifests):
        directory = outputs / job_id
        assert read_video_info(directory / "video.mp4")[:3] == (13, 64, 32)
        assert (directory / "trajectory.json").is_file()
        engine = manifest["engine"]
        assert (engine["variant"], engine["steps"], engine["guidance_scale"]) == ("wan-distilled", 4, 1.0)
        assert engine["checkpoint"] == str(tiny_wan_dir / "wan_distilled_model" / "model.pt")
        assert [chunk["latents"] for chunk in engine["chunks"]] == [[0, 4]]
        assert engine["chunks"][0]["context"] == [] and engine["chunks"][0]["tflop"] > 0
        assert "chunk 1/1" in (directory / "log.txt").read_text()
        assert fetch_job(redis_conn, job_id).meta["progress"]["stage"] == "done"
    assert manifests[0]["spec"]["image"] is None and manifests[1]["spec"]["image"] is not None
    # the HUD is drawn on the WAN video like on any other; the second job reused the loaded weights
    assert read_video_info(outputs / with_image / "video_hud.mp4")[:3] == (13, 64, 32)
    assert [manifest["engine"]["resident"]["reused_weights"] for manifest in manifests] == [False, True]
    # a text-to-video job is re-submitted without an image (onto a queue nobody serves here)
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.jobs import resubmit

    again = outputs / resubmit(redis_conn, load_settings(), text_only, queue="parked")
    assert sorted(path.name for path in again.iterdir() if path.suffix != ".txt") == ["spec.json", "trajectory.json"]


@pytest.fixture
def official_wan_env(worldplay_env, tmp_path, monkeypatch):
    repo = tmp_path / "HY-WorldPlay"
    (repo / "wan").mkdir(parents=True)
    (repo / "wan" / "__init__.py").write_text("")
    (repo / "wan" / "generate.py").write_text(WAN_STUB)
    record = tmp_path / "record"
    record.mkdir()
    models = fake_wan_model_dir(tmp_path / "models")
    for name, value in {
        "WORLDPLAY_OFFICIAL_REPO": str(repo),
        "STUB_RECORD_DIR": str(record),
        "WORLDPLAY_MODEL_DIR": str(models),
        "OMP_NUM_THREADS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    return {"repo": repo, "record": record, "models": models, "outputs": Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])}


@pytest.mark.slow
def test_official_wan_jobs_run_the_checkouts_wan_script(cli, redis_conn, official_wan_env, start_worker):
    official = ("--engine", "official", "--prompt", "a red car", "--pose", "w-3")
    good = _enqueue(cli, *official, "--variant", "wan-distilled", "--image", "meadow")
    refused = _enqueue(cli, *official, "--variant", "wan-ar")
    start_worker("generate")
    _finished(redis_conn, (good, refused), 120)

    # 1. the mapped arguments, the base given as a view whose index names no transformer
    job = fetch_job(redis_conn, good)
    assert job.get_status().value == "finished", job.meta.get("failure")
    ran = json.loads((official_wan_env["record"] / "wan-argv-rank0.json").read_text())
    given = dict(zip(ran["argv"][::2], ran["argv"][1::2]))
    models = official_wan_env["models"]
    assert given["--input"] == "a red car" and given["--num_chunk"] == "1" and given["--num_frames"] == "13"
    assert given["--ckpt_path"] == str(models / "wan_distilled_model" / "model.pt")
    assert given["--ar_model_path"] == str(models / "wan_transformer")
    assert given["--pose"].endswith("/official/pose.json") and given["--image_path"].endswith("input.png")
    assert ran["index"]["transformer"] == [None, None] and ran["index"]["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert {"vae", "text_encoder", "tokenizer", "scheduler"} <= set(ran["folders"])
    # 2. the official video (named after pose and prompt) collected as video.mp4, progress from its bars
    manifest = json.loads((official_wan_env["outputs"] / good / "manifest.json").read_text())
    assert (manifest["video"]["frames"], manifest["video"]["width"], manifest["video"]["height"]) == (13, 1280, 704)
    assert manifest["engine"]["name"] == "official" and {"generate", "collect"} <= set(manifest["timings"]["stages"])
    # 3. the official script cannot run the non-distilled variant: refused before it starts
    failure = fetch_job(redis_conn, refused).meta["failure"]
    assert failure["kind"] == "bad_input" and "distilled model only" in failure["message"]
    assert "--engine native" in failure["hint"]


def test_a_streamed_wan_block_is_on_the_device_before_it_reads_its_own_table():
    """group-offload / low-vram: the WAN block reads its modulation table before any of its layers, so its
    parameters must arrive when the block is called, not when its first layer is."""
    import torch

    from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer
    from worker.pipeline.wan_rollout import wan_ar_rollout
    from worker.runtime.memory_profiles import BlockStreamer

    torch.manual_seed(0)
    transformer = WanWorldPlayTransformer(WanConfig.tiny()).eval()
    streamer = BlockStreamer(transformer.blocks, torch.device("cpu"))
    resident_when_called: list[bool] = []
    for index, block in enumerate(transformer.blocks):
        block.register_forward_pre_hook(
            lambda module, args, index=index: resident_when_called.append(streamer.current == index)
        )
    intrinsics = torch.tensor([[0.5, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1]]).expand(4, 3, 3)
    with torch.no_grad():
        wan_ar_rollout(
            transformer,
            text_states=torch.randn(1, 512, transformer.config.text_dim),
            num_latents=4,
            height_latents=2,
            width_latents=2,
            viewmats=torch.eye(4).expand(4, 4, 4),
            intrinsics=intrinsics,
            action_ids=torch.zeros(4, dtype=torch.long),
            first_latent=None,
            generator=torch.Generator().manual_seed(0),
        )
    assert resident_when_called and all(resident_when_called)


def test_a_wan_job_names_its_own_resolution_and_old_specs_still_read(cli, worldplay_env):
    from pydantic import ValidationError

    from worldplay_cli.contract.specs import JobSpec

    def dry_run(*args: str) -> dict:
        code, out, err = cli("generate", "--dry-run", "--json", "--engine", "native", *args)
        assert code == 0, err
        return json.loads(out)

    spec = dry_run("--variant", "wan-distilled", "--prompt", "a red car", "--pose", "w-3")
    assert (spec["width"], spec["height"], spec["resolution"]) == (1280, 704, "704p")
    assert dry_run("--variant", "wan-distilled", *SMALL)["resolution"] == "32p"
    assert dry_run("--variant", "ar-distilled", "--image", "meadow", *SMALL)["resolution"] == "480p"
    # a WAN spec written before the resolution was derived said 480p: it reads as the frames' own
    assert JobSpec.model_validate({**spec, "resolution": "480p"}).resolution == "704p"
    without = {name: value for name, value in spec.items() if name != "resolution"}
    assert JobSpec.model_validate(without).resolution == "704p"
    with pytest.raises(ValidationError, match="frames of 1280x704 are 704p, not 720p"):
        JobSpec.model_validate({**spec, "resolution": "720p"})
    hunyuan = dry_run("--variant", "ar-distilled", "--image", "meadow", *SMALL)
    with pytest.raises(ValidationError, match="unknown resolution '704p'"):
        JobSpec.model_validate({**hunyuan, "resolution": "704p"})
