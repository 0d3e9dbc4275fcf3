"""docker-compose.yml (no Docker engine here): parse it and check the properties the docs promise."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).parent.parent / "docker-compose.yml"


def _load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _flags(command: list[str]) -> dict[str, str]:
    return {command[i]: command[i + 1] for i in range(1, len(command) - 1) if command[i].startswith("--")}


def test_redis_is_version_7_with_aof_and_no_eviction():
    redis = _load()["services"]["redis"]
    assert redis["image"] == "redis:7"
    flags = _flags(redis["command"])
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "always"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert "--requirepass" in flags
    assert any(volume.endswith(":/data") for volume in redis["volumes"])  # AOF survives the container


def test_the_worker_reserves_gpus_and_mounts_models_and_outputs():
    services = _load()["services"]
    worker = services["worker"]
    assert worker["command"][:2] == ["worldplay", "worker"] and "--gpus" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    mounts = {volume.rsplit(":", 1)[1] for volume in worker["volumes"]}
    env = worker["environment"]
    assert env["WORLDPLAY_OUTPUT_ROOT"].startswith(tuple(mounts))
    assert env["WORLDPLAY_MODEL_DIR"].startswith(tuple(mounts))
    assert "@redis:6379" in env["WORLDPLAY_REDIS_URL"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_vllm_for_prompt_rewriting_is_optional_and_wired_to_the_official_variables():
    services = _load()["services"]
    assert services["vllm"]["profiles"] == ["rewrite"]
    env = services["worker"]["environment"]
    assert env["I2V_REWRITE_BASE_URL"] == env["T2V_REWRITE_BASE_URL"] == "http://vllm:8000/v1"
