"""Writing a tiny random model directory (`worldplay dev tiny-model`, `worldplay bench --tiny`).

The writing needs torch, which the CLI never imports: it runs `python -m worker.pipeline.tiny_model` in a
subprocess and reads the directory it wrote from its last line of output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from worldplay_cli.contract import layout
from worldplay_cli.contract.errors import BadInput, WorldplayError


def write_tiny_model(root: Path, seed: int, hub_names: bool, family: str = "hunyuan") -> Path:
    """Run the writer in a subprocess; refuse to write into a directory that holds anything but an earlier
    tiny model (the writer's marker file says so). `family`: whose layout (contract.variants.FAMILIES)."""
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} exists and is not a directory", "choose a new or empty directory")
    if root.is_dir() and any(root.iterdir()) and not (root / layout.TINY_MARKER).is_file():
        raise BadInput(
            f"{root} is not empty", "choose a new or empty directory (a tiny model directory may be rewritten)"
        )
    command = [sys.executable, "-m", "worker.pipeline.tiny_model", str(root), "--seed", str(seed), "--family", family]
    if hub_names:
        command.append("--hub-names")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {completed.returncode}"
        missing = re.search(r"No module named '([\w.]+)'", detail)
        if missing:
            raise WorldplayError(
                f"the tiny model needs the worker extra (torch, safetensors, transformers); "
                f"{missing.group(1).split('.')[0]} is not installed",
                'from a clone: pip install -e ".[worker]"  (or: pip install "worldplay[worker]"); '
                "GPU users install their CUDA torch first",
            )
        raise WorldplayError(
            f"writing the tiny model failed: {detail}",
            f"`{sys.executable} -m worker.pipeline.tiny_model {root}` shows the full output",
        )
    try:
        return Path(json.loads(completed.stdout.strip().splitlines()[-1])["model_dir"])
    except (ValueError, KeyError, IndexError):
        raise WorldplayError(f"the tiny model writer printed no result: {completed.stdout[-200:]!r}") from None
