"""The training config: YAML + dotted overrides, strict validation, clear errors; importable without torch."""

from __future__ import annotations

import pytest
import yaml

from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import ARMethod, BiMethod, apply_overrides, load_train_config, validate_config

MINIMAL = {
    "version": 1,
    "model": {"model_dir": "models/worldplay"},
    "data": {"path": "data/prepared"},
    "max_steps": 100,
    "checkpoint": {"output_dir": "runs/one"},
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_are_the_official_ar_recipe_and_paths_resolve_against_the_config(tmp_path):
    config = load_train_config(_write(tmp_path, MINIMAL))
    assert isinstance(config.method, ARMethod)
    assert (config.method.window_latents, config.method.chunk_latents, config.method.context_latents) == (24, 4, 12)
    assert config.method.memory_probability == 0.8 and config.method.history_timesteps == (16, 500)
    assert config.method.timesteps.shift == 3.0 and config.optimizer.learning_rate == 1e-5
    assert config.model.model_dir == str(tmp_path / "models" / "worldplay")
    assert config.checkpoint.output_dir == str(tmp_path / "runs" / "one")


def test_a_bundled_example_by_name_reads_and_writes_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_train_config("tiny_synthetic", ["max_steps=5"])
    assert config.model.model_dir == str(tmp_path / "tiny-model") and config.data.path == str(
        tmp_path / "synth-prepared"
    )
    assert config.checkpoint.output_dir == str(tmp_path / "tiny-ar") and config.max_steps == 5
    # a file of that name wins; an unknown name lists the examples
    (tmp_path / "tiny_synthetic").write_text(yaml.safe_dump(MINIMAL))
    assert load_train_config("tiny_synthetic").checkpoint.output_dir == str(tmp_path / "runs" / "one")
    with pytest.raises(BadInput) as raised:
        load_train_config("tiny_synthetc")
    assert "no training config at tiny_synthetc" in raised.value.message and "tiny_synthetic" in raised.value.hint


def test_dotted_overrides_set_nested_values_with_yaml_types(tmp_path):
    config = load_train_config(
        _write(tmp_path, MINIMAL),
        ["optimizer.learning_rate=3e-4", "method.name=bi", "method.window_latents=8", "ema={decay: 0.95}", "fsdp=true"],
    )
    assert config.optimizer.learning_rate == 3e-4 and config.fsdp is True
    assert isinstance(config.method, BiMethod) and config.method.window_latents == 8
    assert config.ema.decay == 0.95


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_step": 3}, "max_step: Extra inputs are not permitted"),
        ({"optimizer": {"learnig_rate": 1}}, "optimizer.learnig_rate"),
        ({"method": {"name": "ar", "window_latents": 10}}, "not a multiple of chunk_latents"),
        ({"method": {"name": "ar", "chunk_latents": 2, "window_latents": 8}}, "use chunk_latents 4"),
        ({"method": {"name": "ar", "window_latents": 12, "context_latents": 8}}, "below the 8 memory latents"),
        ({"method": {"name": "ar", "history_timesteps": [600, 100]}}, "low <= high"),
        ({"method": {"name": "gan"}}, "does not match any of the expected tags"),
        ({"version": 2}, "version"),
    ],
)
def test_bad_configs_name_the_problem(change, message):
    with pytest.raises(BadInput) as raised:
        validate_config({**MINIMAL, **change})
    assert message in raised.value.message


def test_malformed_overrides_and_files_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not KEY=VALUE"):
        apply_overrides({}, ["optimizer.learning_rate"])
    with pytest.raises(BadInput, match="is not a section"):
        apply_overrides({"max_steps": 3}, ["max_steps.x=1"])
    with pytest.raises(BadInput, match="no training config"):
        load_train_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(BadInput, match="not a mapping"):
        load_train_config(tmp_path / "list.yaml")
