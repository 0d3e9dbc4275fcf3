"""Model-directory resolution, `worldplay dev tiny-model`, and the errors for missing, corrupt, mismatched
or wrong-variant pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from spine_util import linked_copy
from worker.pipeline.model_dir import (
    ACTION_DIRS,
    HUB_DISTILLED_NAME,
    SHARED_PIECES,
    SR_FILES,
    WEIGHTS_NAME,
    ModelDirError,
    resolve_model_dir,
)
from worker.pipeline.tiny_model import MARKER
from worldplay_cli.contract import layout
from worldplay_cli.contract.variants import all_variants

HUNYUAN = [record.name for record in all_variants() if record.family_name == "hunyuan"]  # the default tiny model


def fake_layout(root: Path, variants=tuple(ACTION_DIRS), distilled_name: str = WEIGHTS_NAME) -> Path:
    """Empty files wherever the layout has a file: resolution only looks at names."""
    paths = [path for _, files, _ in SHARED_PIECES for path in files]
    for variant in variants:
        name = distilled_name if variant == "ar-distilled" else WEIGHTS_NAME
        paths.append(f"{ACTION_DIRS[variant]}/{name}")
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
    return root


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldplay_cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("variant", HUNYUAN)
def test_a_complete_layout_resolves_for_every_variant(tmp_path, variant):
    paths = resolve_model_dir(fake_layout(tmp_path), variant)
    assert paths.action_checkpoint == tmp_path / ACTION_DIRS[variant] / WEIGHTS_NAME
    assert paths.transformer_dir == tmp_path / "transformer" / "480p_i2v"
    assert not paths.has_sr


def test_the_distilled_checkpoint_may_keep_its_hub_name(tmp_path):
    paths = resolve_model_dir(fake_layout(tmp_path, distilled_name=HUB_DISTILLED_NAME), "ar-distilled")
    assert paths.action_checkpoint.name == HUB_DISTILLED_NAME


def test_sr_weights_are_found_when_present(tmp_path):
    fake_layout(tmp_path)
    for path in SR_FILES:
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).touch()
    assert resolve_model_dir(tmp_path, "ar").has_sr


def test_every_missing_piece_is_listed_with_the_download_command(tmp_path):
    fake_layout(tmp_path, variants=("bi",))
    (tmp_path / "vision_encoder/siglip/image_encoder/config.json").unlink()
    (tmp_path / "vae/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelDirError) as error:
        resolve_model_dir(tmp_path, "ar")
    assert {piece.piece for piece in error.value.missing} == {"siglip", "hunyuanvideo-480p-i2v", "action-ar"}
    assert "ar_model/diffusion_pytorch_model.safetensors" in error.value.message
    assert "vision_encoder/siglip/image_encoder/config.json" in error.value.message
    assert error.value.hint == f"run `worldplay download ar --model-dir {tmp_path}`"


def test_a_missing_directory_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist") as error:
        resolve_model_dir(tmp_path / "nowhere", "ar-distilled")
    assert "worldplay download ar-distilled" in error.value.hint


def test_another_variants_checkpoint_is_refused(tmp_path):
    fake_layout(tmp_path)
    with pytest.raises(ModelDirError, match="is the ar model") as error:
        resolve_model_dir(tmp_path, "bi", checkpoint=tmp_path / "ar_model" / WEIGHTS_NAME)
    assert "--variant ar" in error.value.hint
    elsewhere = tmp_path / "mine.safetensors"
    elsewhere.touch()
    assert resolve_model_dir(tmp_path, "bi", checkpoint=elsewhere).action_checkpoint == elsewhere


def test_unknown_variant(tmp_path):
    with pytest.raises(ModelDirError, match="unknown variant"):
        resolve_model_dir(fake_layout(tmp_path), "ar-rl-distilled")


def test_pieces_and_paths_agree_with_the_download_catalog():
    from worldplay_cli.download.catalog import PIECES, VARIANTS

    assert {piece for _, _, piece in SHARED_PIECES} <= set(PIECES)
    for variant in ACTION_DIRS:
        assert f"action-{variant}" in PIECES
        assert VARIANTS[variant].action_checkpoint == layout.action_checkpoint(variant)


# --- the tiny model through the CLI, and broken real directories -----------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "model"
    completed = cli("dev", "tiny-model", str(root), "--hub-names", "--json")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["model_dir"] == str(root)
    return root


@pytest.mark.slow
def test_dev_tiny_model_writes_a_loadable_layout_with_the_hub_name(tiny_dir):
    from worker.pipeline.pipeline import WorldPlayPipeline

    assert (tiny_dir / MARKER).is_file()
    distilled = tiny_dir / ACTION_DIRS["ar-distilled"]
    assert sorted(path.name for path in distilled.iterdir()) == [HUB_DISTILLED_NAME]
    for variant in HUNYUAN:
        resolve_model_dir(tiny_dir, variant)
    pipeline = WorldPlayPipeline.from_model_dir(tiny_dir, "ar-distilled", device="cpu")
    assert pipeline.paths.action_checkpoint == distilled / HUB_DISTILLED_NAME


def test_dev_tiny_model_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    completed = cli("dev", "tiny-model", str(tmp_path))
    assert completed.returncode == 2
    assert "is not empty" in completed.stderr and "Traceback" not in completed.stderr


def test_dev_tiny_model_on_the_light_install_says_what_to_install(tmp_path):
    # The light install has no torch: a package directory ahead of site-packages makes `import torch` fail
    # exactly as it fails there (ModuleNotFoundError), in the CLI and in the writer it starts.
    shadow = tmp_path / "no-torch"
    (shadow / "torch").mkdir(parents=True)
    (shadow / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "dev", "tiny-model", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert completed.returncode == 1 and completed.stderr.count("\n") == 1, completed.stderr
    assert "needs the worker extra" in completed.stderr and 'pip install -e ".[worker]"' in completed.stderr


@pytest.mark.slow
def test_a_truncated_checkpoint_is_reported_with_the_repair_command(tiny_dir, tmp_path):
    from worker.pipeline.pipeline import WorldPlayPipeline

    root = linked_copy(tiny_dir, tmp_path / "model", replace_dirs=("ar_model",))
    (root / "ar_model").mkdir()
    intact = (tiny_dir / "ar_model" / WEIGHTS_NAME).read_bytes()
    (root / "ar_model" / WEIGHTS_NAME).write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ModelDirError, match="cannot load the transformer") as error:
        WorldPlayPipeline.from_model_dir(root, "ar", device="cpu")
    assert "corrupt" in error.value.hint or "download it again" in error.value.hint


@pytest.mark.slow
def test_pieces_of_different_models_are_refused(tiny_dir, tmp_path):
    from worker.models.tiny_vae import TINY_VAE_CONFIG, write_tiny_vae
    from worker.pipeline.pipeline import WorldPlayPipeline

    root = linked_copy(tiny_dir, tmp_path / "model", replace_dirs=("vae",))
    write_tiny_vae(root, config=replace(TINY_VAE_CONFIG, latent_channels=8))
    with pytest.raises(ModelDirError, match="VAE latent channels 8 != transformer in_channels 4"):
        WorldPlayPipeline.from_model_dir(root, "ar", device="cpu")
