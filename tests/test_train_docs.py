"""The quick start of docs/training.md, run exactly as written in a fresh directory, so the doc cannot
drift from the commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "training.md"
CONFIGS = REPO / "worker" / "training" / "configs"


def quick_start_blocks() -> list[str]:
    section = DOC.read_text().split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_training_quick_start_runs_as_written(tmp_path, worldplay_env):
    blocks = quick_start_blocks()
    assert blocks, "docs/training.md has no quick-start command block"
    user_home, fresh = tmp_path / "user", tmp_path / "fresh"
    user_home.mkdir()
    fresh.mkdir()
    shipped = sorted(CONFIGS.iterdir())
    # the test's settings (worldplay_env) plus a home of its own for the `~` of the doc, and the
    # `worldplay` script of this interpreter's environment
    env = {
        **os.environ,
        "HOME": str(user_home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("finished at step") == 2  # the run and its resumption
    run = user_home / "worldplay-quickstart" / "tiny-ar"
    assert (
        sorted(run.glob("checkpoint-*/transformer/diffusion_pytorch_model.safetensors"))
        and (run / "validation").is_dir()
    )
    # nothing lands next to the bundled config or in the directory the user started from
    assert sorted(CONFIGS.iterdir()) == shipped and not any(fresh.iterdir())
