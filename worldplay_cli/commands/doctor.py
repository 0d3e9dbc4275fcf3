"""`worldplay doctor`: can this machine run worldplay, and how should it?

Checks torch/CUDA/NCCL/flash-attn (in a `python -m worker.doctor` subprocess: the CLI never imports
torch), ffmpeg, Redis, the output root and the model directory, then recommends an engine, a variant,
GPUs per job and a memory profile for the detected hardware. Exit code 1 when a check failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.options import ConfigOption, JsonOption, RedisUrlOption
from worldplay_cli.output import emit

PROBE_TIMEOUT_S = 120
STATUS_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    model_dir: Annotated[
        Optional[Path],
        typer.Option("--model-dir", help="Model directory (default: the model_dir setting).", show_default=False),
    ] = None,
    python: Annotated[
        Optional[str],
        typer.Option("--python", help="Interpreter the workers use (default: this one).", show_default=False),
    ] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check torch, CUDA, flash-attn, ffmpeg, Redis and the model directory; recommend a setup."""
    from worldplay_cli.contract.settings import load_settings

    settings = load_settings({"redis_url": redis_url, "model_dir": model_dir}, config)
    report = diagnose(settings, python or sys.executable)
    emit(report, as_json, lambda console: render(console, report))
    failed = [check["name"] for check in report["checks"] if check["status"] == "fail"]
    if failed:
        raise WorldplayError(f"{len(failed)} check(s) failed: {', '.join(failed)}", "see the hints above")


def diagnose(settings, python: str) -> dict:
    model_dir = settings.model_dir.expanduser()
    probe, probe_error = run_probe(python, model_dir)
    checks = [
        *worker_checks(probe, probe_error),
        check_ffmpeg(),
        check_redis(settings),
        check_output_root(settings.output_root),
    ]
    checks.append(check_model_dir(probe, model_dir))
    checks.append(check_super_resolution(probe))
    return {
        "checks": checks,
        "recommendation": probe["recommendation"] if probe else None,
        "probe": probe,
    }


def _check(name: str, status: str, detail: str, hint: str | None = None) -> dict:
    return {"name": name, "status": status, "detail": detail, "hint": hint}


def run_probe(python: str, model_dir: Path) -> tuple[dict | None, str | None]:
    """The worker-side facts from `python -m worker.doctor`, or why they could not be had."""
    command = [python, "-m", "worker.doctor", "--model-dir", str(model_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=dict(os.environ))
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{python}: {error}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit code {done.returncode}"
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), None
    except (json.JSONDecodeError, IndexError):
        return None, f"unreadable probe output: {done.stdout[:200]!r}"


def worker_checks(probe: dict | None, error: str | None) -> list[dict]:
    if probe is None:
        return [
            _check("worker", "fail", f"cannot run the worker probe: {error}", "is worldplay installed in that Python?")
        ]
    torch_info = probe["torch"]
    checks = [_check("python", "ok", f"{probe['python']['version']} ({probe['python']['executable']})")]
    if not torch_info["installed"]:
        checks.append(
            _check("torch", "warn", "not installed: only the preview engine can run", "pip install 'worldplay[worker]'")
        )
        return checks
    checks.append(_check("torch", "ok", f"{torch_info['version']} (CUDA build {torch_info['cuda_build'] or 'none'})"))
    gpus = torch_info["gpus"]
    if gpus:
        names = ", ".join(f"{gpu['index']}: {gpu['name']} {gpu['memory_bytes'] / 1e9:.0f} GB" for gpu in gpus)
        checks.append(_check("cuda", "ok", f"{len(gpus)} GPU(s): {names}"))
        nccl = "ok" if torch_info["nccl_available"] else ("warn" if len(gpus) > 1 else "ok")
        checks.append(_check("nccl", nccl, "available" if torch_info["nccl_available"] else "not in this torch build",
                             None if nccl == "ok" else "install a CUDA build of torch for multi-GPU jobs"))  # fmt: skip
        flash = probe["flash_attn"]
        if flash["installed"]:
            checks.append(_check("flash-attn", "ok", f"{flash['version']}"))
        else:
            checks.append(
                _check("flash-attn", "warn", "not installed: torch SDPA is used (slower)", "pip install flash-attn")
            )
    else:
        detail = "no CUDA GPU visible" + ("" if torch_info["cuda_build"] else " (CPU-only torch build)")
        checks.append(_check("cuda", "warn", detail, "the native engine needs a CUDA GPU for real models"))
    return checks


def check_ffmpeg() -> dict:
    try:
        import imageio_ffmpeg

        executable = imageio_ffmpeg.get_ffmpeg_exe()
        done = subprocess.run([executable, "-version"], capture_output=True, text=True, timeout=30)
    except (ImportError, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return _check("ffmpeg", "fail", f"not usable: {error}", "pip install imageio-ffmpeg")
    first = done.stdout.splitlines()[0].split(" Copyright")[0] if done.stdout else f"exit code {done.returncode}"
    return _check("ffmpeg", "ok" if done.returncode == 0 else "fail", f"{first} ({executable})")


def check_redis(settings) -> dict:
    from worldplay_cli import redis_server
    from worldplay_cli.contract.settings import mask_url

    if settings.redis_url:
        try:
            redis_server.connect_url(settings.redis_url).close()
        except WorldplayError as error:
            return _check("redis", "fail", error.message, error.hint)
        return _check("redis", "ok", f"reachable at {mask_url(settings.redis_url)}")
    status = redis_server.status(settings)
    if status["running"]:
        return _check("redis", "ok", f"embedded server {status.get('version')} running ({status['data_dir']})")
    try:
        binary = redis_server.redis_binary()
    except WorldplayError as error:
        return _check("redis", "fail", error.message, error.hint)
    return _check("redis", "ok", f"embedded server not running; starts on first use ({binary})")


def check_output_root(root: Path) -> dict:
    root = root.expanduser()
    existing = next((path for path in (root, *root.parents) if path.exists()), None)
    if existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return _check("output root", "ok", f"{root} is writable" + ("" if root.exists() else " (will be created)"))
    return _check("output root", "fail", f"{root} is not writable", "set output_root to a writable directory")


def check_model_dir(probe: dict | None, model_dir: Path) -> dict:
    state = (probe or {}).get("model_dir")
    if state is None:
        return _check("model dir", "warn", f"{model_dir}: not checked (no worker probe)")
    if not state["exists"]:
        return _check("model dir", "warn", f"{model_dir} does not exist", f"worldplay download {variants.DEFAULT}")
    if "error" in state:
        return _check("model dir", "warn", state["error"])
    ready = [name for name, variant in state["variants"].items() if variant["ready"]]
    if not ready:
        first = next(iter(state["variants"].values()))
        return _check(
            "model dir",
            "warn",
            f"{model_dir}: no variant is complete ({'; '.join(first['missing'][:3])})",
            first["fix"],
        )
    return _check("model dir", "ok", f"{model_dir}: ready: {', '.join(ready)}")


def check_super_resolution(probe: dict | None) -> dict:
    """The optional 720p SR stage: its weights present, or the command that fetches them (not a failure)."""
    state = ((probe or {}).get("model_dir") or {}).get("super_resolution")
    if state is None:
        return _check("super-resolution", "warn", "not checked (no model directory or no worker probe)")
    if state["ready"]:
        return _check("super-resolution", "ok", "720p SR weights present: `worldplay generate --sr` works")
    return _check(
        "super-resolution", "ok", f"optional 720p SR weights not downloaded (no {state['missing'][0]})", state["fix"]
    )


def render(console: Console, report: dict) -> None:
    table = Table(show_header=False, box=None, padding=(0, 1))
    for check in report["checks"]:
        colour = STATUS_COLOURS[check["status"]]
        detail = check["detail"] + (f"\n[dim]hint: {check['hint']}[/dim]" if check["hint"] else "")
        table.add_row(f"[{colour}]{check['status']:>4}[/{colour}]", check["name"], detail)
    console.print(table)
    advice = report["recommendation"]
    if advice is None:
        return
    console.print()
    if advice["engine"] == "native":
        console.print(
            f"[bold]recommended:[/bold] engine native, variant {advice['variant']}, {advice['gpus_per_job']} GPU(s) per job, "
            f"memory profile {advice['memory_profile']} (estimated peak {advice['estimated_peak_gb']} GB per GPU)",
            highlight=False,
        )
    else:
        console.print(f"[bold]recommended:[/bold] engine {advice['engine']}", highlight=False)
    console.print(f"  start workers: {advice['worker_command']}", highlight=False)
    for note in advice["notes"]:
        console.print(f"  - {note}", highlight=False)
