"""The transformer's optional kernels and weights behind the "no silent fallback" rule: `--attention-backend
sage` (SageAttention) and `flash` fail where they cannot run, with a hint, rather than running SDPA; `--weights
fp8` runs and says so in the manifest. SageAttention itself needs a CUDA GPU and the sageattention package:
what runs here is everything up to the kernel call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worker.models.attention import AttentionProcessor, BackendUnavailable, resolve_backend
from worker.models.tiny import TINY_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer

SMALL = ("--prompt", "a quiet street", "--width", "32", "--height", "48")


def test_sage_is_never_chosen_for_you_and_never_replaced_by_sdpa():
    for device, dtype in (("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.bfloat16)):
        assert resolve_backend("auto", device, dtype) in ("flash", "sdpa")
        with pytest.raises(BackendUnavailable, match="attention backend 'sage' cannot run") as raised:
            resolve_backend("sage", device, dtype)  # no CUDA device here, and no sageattention package
        assert "pip install sageattention" in raised.value.hint
    with pytest.raises(BackendUnavailable) as raised:
        resolve_backend("flash", "cpu", torch.bfloat16)
    assert "pip install flash-attn" in raised.value.hint
    with pytest.raises(ValueError, match="auto, flash, sdpa, sage"):
        resolve_backend("xformers", "cpu", torch.float32)


@torch.no_grad()
def test_every_pass_asks_for_sage_and_fails_here():
    model = WorldPlayTransformer(TINY_TRANSFORMER_CONFIG).eval()
    model.set_attention_processor(AttentionProcessor("sage"))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 2, 4, 6, generator=generator)
    cameras = (torch.eye(4).repeat(1, 2, 1, 1), torch.eye(3).repeat(1, 2, 1, 1), torch.zeros(1, 2))
    prompt = PromptEmbeddings(
        torch.randn(1, 4, 16, generator=generator),
        torch.ones(1, 4),
        torch.randn(1, 2, 1472, generator=generator),
        torch.zeros(1, 2),
    )
    with pytest.raises(BackendUnavailable, match="'sage' cannot run"):
        model.forward_bi(x, 500.0, prompt, *cameras)
    with pytest.raises(BackendUnavailable, match="'sage' cannot run"):
        model.forward_text(prompt)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worldplay_cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )


@pytest.mark.slow
def test_a_job_asking_for_sage_is_refused_with_a_hint_and_fp8_weights_run(worldplay_env, tiny_model_dir):
    common = ("generate", "--json", "--engine", "native", "--variant", "ar-distilled", "--pose", "w-3")
    common += ("--model-dir", str(tiny_model_dir), *SMALL)
    refused = cli(*common, "--attention-backend", "sage")
    assert refused.returncode == 1, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: job ") and "failed: attention backend 'sage' cannot run" in error
    assert "pip install sageattention" in error

    completed = cli(*common, "--weights", "fp8")
    assert completed.returncode == 0, completed.stderr
    manifest = json.loads((Path(json.loads(completed.stdout)["video"]).parent / "manifest.json").read_text())
    assert manifest["spec"]["weights"] == "fp8"
    assert (manifest["engine"]["weights"], manifest["engine"]["compile"]) == ("fp8 (upcast)", None)


def test_bad_transformer_options_are_one_line_errors_before_anything_runs(cli):
    code, _, err = cli("bench", "--tiny", "--weights", "fp4")
    assert code == 2 and err.count("\n") == 1 and "--weights 'fp4'" in err and "'fp8'" in err
    code, _, err = cli("generate", "--engine", "preview", "--pose", "w-3", "--compile", "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "use engine native" in err
