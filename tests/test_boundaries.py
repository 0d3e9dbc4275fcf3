"""The layers of the house, checked as a whole: the CLI package never loads the worker or torch, and the
import-linter contracts in pyproject.toml (who may import what) hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Import every module of the light packages (not `__main__`, which runs the app) and list what came along.
PROBE = """
import importlib, pkgutil, sys
import trajectories, worldplay_cli
for package in (worldplay_cli, trajectories):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(sorted({name.split(".")[0] for name in sys.modules} & {"torch", "safetensors", "transformers", "worker"}))
"""


def test_no_module_of_the_cli_or_trajectories_loads_the_worker_or_torch():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# `worldplay --help` as the console script runs it; what it loads is what every command pays to start.
HELP_PROBE = """
import sys
from worldplay_cli.app import main
try:
    main(["--help"])
except SystemExit:
    pass
print(sorted({name.split(".")[0] for name in sys.modules} & {"numpy", "torch"}), file=sys.stderr)
"""


def test_worldplay_help_loads_neither_numpy_nor_torch():
    result = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Usage" in result.stdout, result.stderr
    assert result.stderr.strip() == "[]"


def test_the_import_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([lint_imports, "--no-cache"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")
