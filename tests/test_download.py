"""`worldplay download` / `worldplay models` against a real HTTP stand-in for the Hub and ModelScope."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_hub import GOOD_TOKEN, FakeHub, add_worldplay_repos
from worldplay_cli.app import main
from worldplay_cli.download import transfer
from worldplay_cli.download.sizes import format_size

DISTILLED_REPO_FILE = "ar_distilled_action_model/model.safetensors"
DISTILLED_LAYOUT_FILE = "ar_distilled_action_model/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        add_worldplay_repos(server)
        yield server


@pytest.fixture
def env(hub, tmp_path, monkeypatch):
    """An isolated user: own HF cache and worldplay home, the fake servers as endpoints, no token."""
    values = {
        "HF_ENDPOINT": hub.url,
        "MODELSCOPE_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "WORLDPLAY_HOME": str(tmp_path / "wp"),
        "WORLDPLAY_CONFIG": str(tmp_path / "config.toml"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MODELSCOPE_CACHE", "WORLDPLAY_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    hub.reset_requests()
    return {
        **values,
        "model_dir": tmp_path / "wp" / "models" / "HunyuanVideo-1.5",
        "cache": tmp_path / "hf" / "hub",
        "tmp": tmp_path,
    }


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *args, "--json")
    return code, (json.loads(out) if out.strip() else {"stderr": err})


def file_requests(hub: FakeHub) -> list:
    """Requests that move file bytes (resolve GETs, CDN GETs, ModelScope file GETs)."""
    return [
        r
        for r in hub.requests
        if r.method == "GET" and ("/resolve/" in r.path or r.path.startswith("/cdn/") or "FilePath=" in r.path)
    ]


def repo_bytes(hub: FakeHub, repo: str, path: str) -> bytes:
    return hub.repos[repo].files[path]


# -- plan -------------------------------------------------------------------------------------------


def test_dry_run_lists_pieces_sizes_and_space_without_downloading(hub, env, capsys):
    code, plan = run_json(capsys, "download", "ar-distilled", "--dry-run", "--token", GOOD_TOKEN)
    assert code == 0
    pieces = {piece["name"]: piece for piece in plan["pieces"]}
    assert list(pieces) == [
        "hunyuanvideo-480p-i2v",
        "qwen2.5-vl",
        "byt5-small",
        "glyph-sdxl-v2",
        "siglip",
        "action-ar-distilled",
    ]
    hv = hub.repos["tencent/HunyuanVideo-1.5"].files
    wanted_hv = [p for p in hv if p.startswith(("vae/", "scheduler/", "transformer/480p_i2v/"))]
    assert pieces["hunyuanvideo-480p-i2v"]["total_bytes"] == sum(len(hv[p]) for p in wanted_hv)
    assert pieces["byt5-small"]["files"] == 3  # tf_model.h5 and flax_model.msgpack are left out
    assert pieces["glyph-sdxl-v2"]["source"] == "modelscope" and pieces["glyph-sdxl-v2"]["files"] == 3
    assert pieces["siglip"]["gated"] and pieces["siglip"]["problem"] is None
    assert plan["download_bytes"] == plan["total_bytes"] > 0 and plan["present_bytes"] == 0
    assert plan["space"] and all(check["ok"] for check in plan["space"])
    assert file_requests(hub) == []


def test_unreleased_checkpoint_is_listed_not_attempted(hub, env, capsys):
    code, out, err = run(capsys, "download", "ar-rl-distilled")
    assert code == 2 and "not released yet" in err
    assert hub.requests == []
    code, listing = run_json(capsys, "models", "list")
    states = {row["name"]: row["status"] for row in listing["variants"]}
    assert states["ar-rl-distilled"] == "unreleased" and states["ar-distilled"] == "missing"


# -- fresh download, layout, idempotence ---------------------------------------------------------------


def test_fresh_download_links_official_layout_into_hub_cache(hub, env, capsys):
    from huggingface_hub import try_to_load_from_cache

    code, result = run_json(capsys, "download", "ar-distilled", "--token", GOOD_TOKEN)
    assert code == 0, result
    model_dir, cache = env["model_dir"], env["cache"]
    checkpoint = model_dir / DISTILLED_LAYOUT_FILE
    assert checkpoint.is_symlink()
    assert checkpoint.read_bytes() == repo_bytes(hub, "tencent/HY-WorldPlay", DISTILLED_REPO_FILE)
    blob = checkpoint.resolve()
    assert blob.parent == (cache / "models--tencent--HY-WorldPlay" / "blobs").resolve()
    assert blob.name == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    expected = {
        "vae/config.json": ("tencent/HunyuanVideo-1.5", "vae/config.json"),
        "text_encoder/llm/model-00002-of-00002.safetensors": (
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "model-00002-of-00002.safetensors",
        ),
        "vision_encoder/siglip/image_encoder/model.safetensors": (
            "black-forest-labs/FLUX.1-Redux-dev",
            "image_encoder/model.safetensors",
        ),
        "text_encoder/byt5-small/pytorch_model.bin": ("google/byt5-small", "pytorch_model.bin"),
    }
    for layout_path, (repo, repo_path) in expected.items():
        path = model_dir / layout_path
        assert path.is_symlink() and path.read_bytes() == repo_bytes(hub, repo, repo_path), layout_path
    glyph = model_dir / "text_encoder/Glyph-SDXL-v2/checkpoints/byt5_model.pt"
    assert glyph.read_bytes() == hub.modelscope["AI-ModelScope/Glyph-SDXL-v2"].files["checkpoints/byt5_model.pt"]
    assert not (model_dir / "text_encoder/byt5-small/tf_model.h5").exists()
    assert not (model_dir / "transformer/720p_t2v").exists()
    # The Hub cache stays a valid huggingface_hub cache: other tools find the same files.
    cached = try_to_load_from_cache("tencent/HY-WorldPlay", DISTILLED_REPO_FILE, cache_dir=cache)
    assert cached is not None and Path(cached).resolve() == blob
    assert result["downloaded_bytes"] == result["total_bytes"]

    code, paths = run_json(capsys, "models", "path", "ar-distilled")
    assert code == 0 and paths == {
        "variant": "ar-distilled",
        "model_path": str(model_dir),
        "action_ckpt": str(checkpoint),
    }

    hub.reset_requests()
    code, again = run_json(capsys, "download", "ar-distilled", "--token", GOOD_TOKEN)
    assert code == 0 and again["downloaded_bytes"] == 0 and file_requests(hub) == []


def test_hardlink_layout_shares_the_blob_inode(hub, env, capsys):
    code, _ = run_json(capsys, "download", "ar", "--skip", "siglip", "--link", "hardlink")
    assert code == 0
    checkpoint = env["model_dir"] / "ar_model/diffusion_pytorch_model.safetensors"
    blobs = env["cache"] / "models--tencent--HY-WorldPlay" / "blobs"
    blob = blobs / hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert not checkpoint.is_symlink() and checkpoint.stat().st_ino == blob.stat().st_ino


def test_local_dir_holds_real_files_and_rm_frees_them(hub, env, capsys):
    local = env["tmp"] / "weights"
    code, _ = run_json(capsys, "download", "bi", "--skip", "siglip", "--local-dir", str(local))
    assert code == 0
    checkpoint = local / "bidirectional_model/diffusion_pytorch_model.safetensors"
    assert checkpoint.is_file() and not checkpoint.is_symlink() and checkpoint.stat().st_nlink == 1
    assert not (env["cache"] / "models--tencent--HY-WorldPlay").exists()
    code, report = run_json(capsys, "models", "verify", "--model-dir", str(local))
    assert code == 0 and report["ok"]
    code, removed = run_json(capsys, "models", "rm", "bi", "--yes", "--model-dir", str(local))
    assert code == 0 and "action-bi" in removed["removed_pieces"]
    assert removed["freed_bytes"] >= len(
        repo_bytes(hub, "tencent/HY-WorldPlay", "bidirectional_model/diffusion_pytorch_model.safetensors")
    )
    assert not checkpoint.exists()


def test_rm_keeps_pieces_other_variants_use(hub, env, capsys):
    assert run_json(capsys, "download", "ar", "ar-distilled", "--skip", "siglip")[0] == 0
    code, removed = run_json(capsys, "models", "rm", "ar-distilled", "--yes", "--purge-cache")
    assert code == 0 and removed["removed_pieces"] == ["action-ar-distilled"]
    assert not (env["model_dir"] / DISTILLED_LAYOUT_FILE).exists()
    assert (env["model_dir"] / "ar_model/diffusion_pytorch_model.safetensors").exists()
    assert removed["freed_bytes"] == len(repo_bytes(hub, "tencent/HY-WorldPlay", DISTILLED_REPO_FILE))
    states = {row["name"]: row for row in run_json(capsys, "models", "list")[1]["variants"]}
    assert states["ar-distilled"]["status"] == "partial" and states["ar"]["missing_pieces"] == ["siglip"]


# -- resume, verify and repair ----------------------------------------------------------------------


def test_resume_after_dropped_connection_within_and_across_runs(hub, env, capsys, monkeypatch):
    monkeypatch.setattr(transfer, "RETRY_BASE_DELAY_S", 0.01)
    size = len(repo_bytes(hub, "tencent/HY-WorldPlay", "ar_model/diffusion_pytorch_model.safetensors"))
    glyph = "checkpoints/byt5_model.pt"
    # Within a run: one cut mid-file on the CDN and one on ModelScope; the retry continues with Range.
    hub.drop_after("ar_model/diffusion_pytorch_model.safetensors", 100_000)
    hub.drop_after(glyph, 20_000)
    code, result = run_json(capsys, "download", "ar", "--skip", "siglip")
    assert code == 0, result
    ranges = [r.range for r in hub.requests if r.path.startswith("/cdn/") and r.range]
    assert "bytes=100000-" in ranges
    assert hub.served_bytes("ar_model/diffusion_pytorch_model.safetensors") == size
    assert hub.served_bytes(glyph) == len(hub.modelscope["AI-ModelScope/Glyph-SDXL-v2"].files[glyph])
    report = run_json(capsys, "models", "verify", "ar")[1]
    assert report["problems"] == [] and report["absent_pieces"] == ["siglip"]  # skipped, so reported

    # Across runs: the server keeps cutting, the run gives up and keeps the partial; the next run resumes it.
    hub.drop_after("ar_rl_model/diffusion_pytorch_model.safetensors", 120_000)
    hub.drop_after("ar_rl_model/diffusion_pytorch_model.safetensors", 0, times=transfer.MAX_STALLED_ATTEMPTS)
    code, out, err = run(capsys, "download", "ar-rl", "--skip", "siglip")
    assert code == 1 and "resumes from the partial file" in err
    partials = list((env["cache"] / "models--tencent--HY-WorldPlay" / "blobs").glob("*.incomplete"))
    assert len(partials) == 1 and partials[0].stat().st_size == 120_000
    hub.reset_requests()
    code, result = run_json(capsys, "download", "ar-rl", "--skip", "siglip")
    assert code == 0, result
    assert [r.range for r in hub.requests if r.path.startswith("/cdn/")] == ["bytes=120000-"]
    assert hub.served_bytes("ar_rl_model/diffusion_pytorch_model.safetensors") == size - 120_000
    layout = env["model_dir"] / "ar_rl_model/diffusion_pytorch_model.safetensors"
    assert layout.read_bytes() == repo_bytes(
        hub, "tencent/HY-WorldPlay", "ar_rl_model/diffusion_pytorch_model.safetensors"
    )


def test_verify_finds_corrupt_and_missing_files_and_repair_fixes_them(hub, env, capsys):
    assert run_json(capsys, "download", "ar-distilled", "--skip", "siglip")[0] == 0
    checkpoint = env["model_dir"] / DISTILLED_LAYOUT_FILE
    blob = checkpoint.resolve()
    data = bytearray(blob.read_bytes())
    data[1234] ^= 0xFF  # same size, different content: only the hash can tell
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    (env["model_dir"] / "vae/config.json").resolve().unlink()  # the link now dangles

    assert run_json(capsys, "models", "verify", "--quick")[1]["problems"] == [
        {
            "piece": "hunyuanvideo-480p-i2v",
            "layout_path": "vae/config.json",
            "status": "missing",
            "size": len(repo_bytes(hub, "tencent/HunyuanVideo-1.5", "vae/config.json")),
        }
    ]
    code, report = run_json(capsys, "models", "verify")
    assert code == 1 and not report["ok"]
    assert {(p["layout_path"], p["status"]) for p in report["problems"]} == {
        (DISTILLED_LAYOUT_FILE, "corrupt"),
        ("vae/config.json", "missing"),
    }
    assert report["repair"].startswith("worldplay download ar-distilled --repair")

    code, result = run_json(capsys, "download", "ar-distilled", "--skip", "siglip", "--repair")
    assert code == 0 and result["repaired_files"] == [DISTILLED_LAYOUT_FILE]
    assert checkpoint.read_bytes() == repo_bytes(hub, "tencent/HY-WorldPlay", DISTILLED_REPO_FILE)
    assert run_json(capsys, "models", "verify")[1]["ok"]


# -- gated, disk, offline, token ----------------------------------------------------------------------


def test_gated_repo_without_token_stops_before_any_download(hub, env, capsys):
    code, plan = run_json(capsys, "download", "ar-distilled", "--dry-run")
    siglip = next(piece for piece in plan["pieces"] if piece["name"] == "siglip")
    assert "gated" in siglip["problem"]
    assert "https://huggingface.co/black-forest-labs/FLUX.1-Redux-dev" in siglip["hint"]
    code, out, err = run(capsys, "download", "ar-distilled")
    assert code == 1 and "FLUX.1-Redux-dev is gated" in err and "--skip siglip" in err
    assert file_requests(hub) == []
    code, out, err = run(capsys, "download", "ar-distilled", "--token", "hf_noACCESStoken")
    assert code == 1 and "no access yet" in err
    assert run_json(capsys, "download", "ar-distilled", "--skip", "siglip")[0] == 0


def test_not_enough_disk_refuses_to_start(hub, env, capsys):
    code, out, err = run(capsys, "download", "ar-distilled", "--skip", "siglip", "--quota", "100kB")
    assert code == 1 and "not enough disk space" in err and "--ignore-disk-space" in err
    assert file_requests(hub) == []
    code, plan = run_json(capsys, "download", "ar-distilled", "--skip", "siglip", "--quota", "100kB", "--dry-run")
    quota = next(check for check in plan["space"] if check["path"] == "--quota")
    assert quota["free"] == 100_000 and not quota["ok"]


def _cli(env: dict, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **{k: v for k, v in env.items() if isinstance(v, str)}, **(extra_env or {})}
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        if name not in (extra_env or {}):
            environ.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", *args], env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_offline_mode_rebuilds_from_cache_with_no_network(hub, env, capsys):
    assert run_json(capsys, "download", "ar-distilled", "--skip", "siglip")[0] == 0
    import shutil

    shutil.rmtree(env["model_dir"])  # layout and manifest gone; only the caches remain
    hub.reset_requests()
    done = _cli(env, "download", "ar-distilled", "--skip", "siglip", "--json", extra_env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["offline"] and result["downloaded_bytes"] == 0
    assert (env["model_dir"] / DISTILLED_LAYOUT_FILE).read_bytes() == repo_bytes(
        hub, "tencent/HY-WorldPlay", DISTILLED_REPO_FILE
    )
    missing = _cli(env, "download", "bi", "--skip", "siglip", extra_env={"HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 1 and "not in the cache (offline mode)" in missing.stderr
    assert hub.requests == []
    assert run_json(capsys, "models", "verify")[1]["ok"]


@pytest.mark.slow
def test_token_never_printed_logged_or_stored(hub, env, capsys):
    secret_bad = "hf_wrongSECRETtoken42"
    denied = _cli(env, "download", "ar-distilled", "--token", secret_bad, extra_env={"WORLDPLAY_DEBUG": "0"})
    assert denied.returncode == 1
    done = _cli(env, "download", "ar-distilled", "--json", extra_env={"HF_TOKEN": GOOD_TOKEN})
    assert done.returncode == 0, done.stderr
    for text in (denied.stdout, denied.stderr, done.stdout, done.stderr):
        assert secret_bad not in text and GOOD_TOKEN not in text
    for root in (env["model_dir"], env["tmp"] / "wp", env["cache"]):
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                assert GOOD_TOKEN.encode() not in content and secret_bad.encode() not in content, path
    # The token went to the Hub only: the CDN (another origin) never saw credentials.
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and not any(r.authorized for r in cdn)
    assert any(r.authorized for r in hub.requests if "/resolve/" in r.path)


# -- planning without the hub -------------------------------------------------------------------------


def _closed_port_url() -> str:
    """An endpoint on this machine that refuses connections: a hub that cannot be reached."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_offline_dry_run_plans_from_the_catalog_and_says_so(hub, env, capsys):
    from worldplay_cli.download.catalog import KNOWN_SIZES

    code, plan = run_json(capsys, "download", "bi", "--dry-run", "--offline")
    assert code == 0, plan
    assert plan["sizes_from"] == "catalog"
    assert plan["sizes_note"] == "sizes from worldplay's catalog (offline); the hub may differ"
    names = ["hunyuanvideo-480p-i2v", "qwen2.5-vl", "byt5-small", "glyph-sdxl-v2", "siglip", "action-bi"]
    assert [piece["name"] for piece in plan["pieces"]] == names
    for piece in plan["pieces"]:
        assert piece["sizes_from"] == "catalog" and piece["files"] is None, piece
        assert piece["total_bytes"] == KNOWN_SIZES[piece["name"]].size > 0
    assert plan["total_bytes"] == plan["download_bytes"] == sum(KNOWN_SIZES[name].size for name in names)
    assert plan["space"][0]["need"] == plan["total_bytes"]

    code, out, err = run(capsys, "download", "bi", "--dry-run", "--offline")
    assert code == 0, err
    assert "sizes from worldplay's catalog (offline); the hub may differ" in out
    assert f"total ~{format_size(plan['total_bytes'])}" in out and "~17.1 GB" in out
    assert " 0 B " not in out.replace("present 0 B", "")  # no piece claims to be empty
    assert hub.requests == []


def test_offline_plan_uses_cached_records_and_the_catalog_only_for_the_rest(hub, env, capsys):
    assert run_json(capsys, "download", "ar-distilled", "--skip", "siglip")[0] == 0
    hub.reset_requests()
    code, plan = run_json(capsys, "download", "ar-distilled", "bi", "--dry-run", "--offline")
    assert code == 0
    pieces = {piece["name"]: piece for piece in plan["pieces"]}
    assert pieces["action-ar-distilled"]["sizes_from"] == "local"
    assert pieces["action-ar-distilled"]["total_bytes"] == len(
        repo_bytes(hub, "tencent/HY-WorldPlay", DISTILLED_REPO_FILE)
    )
    assert pieces["action-ar-distilled"]["files"] == 1 and pieces["action-ar-distilled"]["problem"] is None
    assert {name for name, piece in pieces.items() if piece["sizes_from"] == "catalog"} == {"siglip", "action-bi"}
    assert plan["sizes_from"] == "catalog" and hub.requests == []

    # Online, the live listing wins again.
    code, plan = run_json(capsys, "download", "ar-distilled", "--skip", "siglip", "--dry-run")
    assert code == 0 and plan["sizes_from"] == "hub" and plan["sizes_note"] is None
    assert {piece["sizes_from"] for piece in plan["pieces"]} == {"hub"}


def test_unreachable_hub_dry_run_falls_back_to_the_catalog_and_a_real_run_stops(env, capsys, monkeypatch):
    nowhere = _closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", nowhere)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", nowhere)
    code, plan = run_json(capsys, "download", "ar", "--dry-run")
    assert code == 0, plan
    assert plan["sizes_from"] == "catalog" and not plan["offline"]
    assert plan["sizes_note"] == "sizes from worldplay's catalog (the hub is unreachable); the hub may differ"
    assert all(piece["problem"].startswith(f"cannot reach {nowhere}") for piece in plan["pieces"])
    assert plan["total_bytes"] > 50 * 10**9

    code, out, err = run(capsys, "download", "ar")
    assert code == 1 and f"cannot reach {nowhere}" in err.splitlines()[-1]


# -- models verify when nothing (or not everything) is here -------------------------------------------


def test_verify_with_nothing_downloaded_is_not_ok(hub, env, capsys):
    code, out, err = run(capsys, "models", "verify")
    assert code == 1 and "ok" not in out
    assert err == (
        f"error: nothing is downloaded in {env['model_dir']} (hint: run `worldplay download VARIANT`, "
        "VARIANT one of bi, ar, ar-rl, ar-distilled, wan-distilled, wan-ar, sr)\n"
    )
    code, report = run_json(capsys, "models", "verify", "bi")
    assert code == 1 and not report["ok"] and report["not_downloaded"] == ["bi"]
    assert report["absent_pieces"] == [] and report["repair"] is None
    code, out, err = run(capsys, "models", "verify", "bi", "--quick")
    assert code == 1 and err.strip() == (
        f"error: bi is not downloaded in {env['model_dir']} (hint: run `worldplay download bi`)"
    )


def test_verify_after_a_partial_download_says_which_variant_is_incomplete(hub, env, capsys):
    assert run_json(capsys, "download", "ar-distilled", "--skip", "siglip")[0] == 0
    code, out, err = run(capsys, "models", "verify", "--quick")
    assert code == 0
    assert "incomplete ar-distilled: no siglip" in out
    code, report = run_json(capsys, "models", "verify", "ar-distilled", "bi")
    # bi was never fetched: that is said once, and the repair line only names what is here.
    assert (
        code == 1
        and report["not_downloaded"] == []
        and report["incomplete"] == {"ar-distilled": ["siglip"], "bi": ["siglip", "action-bi"]}
    )
    code, out, err = run(capsys, "models", "path", "ar-distilled")
    assert code == 1 and "ar-distilled is incomplete" in err and "siglip" in err


# -- one kind of mistake, one exit code ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("download", "bii"),
        ("download", "bii", "--dry-run", "--offline"),
        ("models", "path", "bii"),
        ("models", "verify", "bii"),
        ("models", "rm", "bii"),  # refused before the confirmation question
        ("models", "rm", "bii", "--yes"),
    ],
)
def test_unknown_variant_is_bad_input_in_every_subcommand(hub, env, capsys, args):
    code, out, err = run(capsys, *args)
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "error: unknown variant 'bii'; did you mean 'bi'? (hint: variants: bi, ar, ar-rl, ar-distilled, wan-distilled, wan-ar, sr"
    )
    assert hub.requests == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (("download", "bi", "--skip", "sigl"), "error: unknown piece 'sigl'; did you mean 'siglip'?"),
        (
            ("models", "path", "ar-rl-distilled"),
            "error: ar-rl-distilled (HY-World1.5-Autoregressive-480P-I2V-rl-distill) is not released yet",
        ),
        (("download", "bi", "--quota", "lots"), "error: cannot read --quota 'lots'"),
        (("download", "bi", "--workers", "0"), "error: invalid value for '--workers'"),
        (("download", "bi", "--link", "soft"), "error: unknown --link 'soft'"),
        (("models", "list", "--model-dir"), "error: option '--model-dir' requires an argument"),
        (("models", "verify", "--full"), "error: no such option: --full"),
    ],
)
def test_bad_values_are_one_line_exit_2(hub, env, capsys, args, expected):
    code, out, err = run(capsys, *args)
    assert code == 2, (code, err)
    assert err.startswith(expected) and err.count("\n") == 1 and "╭" not in err, err
    assert hub.requests == []
