"""`worldplay rewrite` end to end against the fake chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from fake_openai import FakeOpenAI, Reply
from worldplay_cli.app import main
from worldplay_cli.commands.rewrite import render_rewrite, word_diff
from worldplay_cli.rewrite import RewriteResult

SECRET = "sk-cli-9d8e7f"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No user config and no rewrite variables from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("WORLDPLAY_", "T2V_REWRITE_", "I2V_REWRITE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WORLDPLAY_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("WORLDPLAY_HOME", str(tmp_path / "home"))
    return monkeypatch


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return exc.code
    return 0


def test_json_output_is_the_rewrite_result(clean_env, fake, capsys):
    clean_env.setenv("T2V_REWRITE_BASE_URL", fake.base_url)
    clean_env.setenv("T2V_REWRITE_MODEL_NAME", "fake-rewriter")

    assert run(["rewrite", "a cat on a porch", "--json"]) == 0

    result = RewriteResult.model_validate(json.loads(capsys.readouterr().out))
    assert result.rewritten == "A detailed, objective scene: a cat on a porch."
    assert (result.changed, result.model, result.endpoint) == (True, "fake-rewriter", fake.base_url)
    assert result.warning is None


def test_flags_override_the_endpoint_and_the_view_marks_changes(clean_env, fake, capsys):
    assert run(["rewrite", "a cat", "--base-url", fake.base_url, "--model", "fake-rewriter"]) == 0

    out = capsys.readouterr().out
    assert "original" in out and "rewritten" in out
    assert "A detailed, objective scene: a cat." in out
    assert f"model fake-rewriter · prompt version t2v-1 · {fake.base_url}" in out


def test_endpoint_failure_warns_by_default_and_fails_with_required(clean_env, fake, capsys):
    clean_env.setenv("WORLDPLAY_REWRITE__T2V__BASE_URL", fake.base_url)
    clean_env.setenv("WORLDPLAY_REWRITE__T2V__MODEL", "fake-rewriter")
    clean_env.setenv("WORLDPLAY_REWRITE__T2V__API_KEY", SECRET)
    fake.reply(Reply(400), Reply(400))

    assert run(["rewrite", "a cat", "--json"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept["rewritten"] == "a cat" and "returned HTTP 400" in kept["warning"]

    assert run(["rewrite", "a cat", "--required"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: t2v rewrite endpoint {fake.base_url} returned HTTP 400: scripted failure "
        "(hint: check rewrite.t2v.model and that the server is OpenAI-compatible)\n"
    )
    assert SECRET not in captured.out + captured.err + json.dumps(kept)


def test_no_endpoint_with_required_is_bad_input(clean_env, capsys):
    assert run(["rewrite", "a cat", "--required", "--image", "meadow"]) == 2  # a bundled example: a real image
    err = capsys.readouterr().err
    assert err.startswith("error: no rewrite endpoint configured for i2v (hint: ")
    assert "I2V_REWRITE_BASE_URL" in err


def test_unchanged_prompt_and_warning_are_rendered():
    console = Console(record=True, width=100)
    render_rewrite(
        console,
        RewriteResult(
            original="a cat",
            rewritten="a cat",
            changed=False,
            model=None,
            prompt_version="t2v-1",
            endpoint=None,
            warning="no rewrite endpoint configured for t2v",
        ),
    )
    text = console.export_text()
    assert "prompt (unchanged)" in text and "warning: no rewrite endpoint configured for t2v" in text


def test_word_diff_marks_dropped_and_added_words():
    before, after = word_diff("a small cat sits", "A small, fluffy cat sits on a porch.")

    assert [(before.plain[s.start : s.end], str(s.style)) for s in before.spans] == []
    assert [(after.plain[s.start : s.end], str(s.style)) for s in after.spans] == [
        ("fluffy", "green"),
        ("on", "green"),
        ("a", "green"),
        ("porch.", "green"),
    ]
    dropped, _ = word_diff("a red door", "a door")
    assert [(dropped.plain[s.start : s.end], str(s.style)) for s in dropped.spans] == [("red", "red strike")]


def test_cli_subprocess_round_trip(fake, tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WORLDPLAY_", "T2V_REWRITE_", "I2V_REWRITE_"))
    }
    env.update(
        WORLDPLAY_CONFIG=str(tmp_path / "absent.toml"),
        WORLDPLAY_HOME=str(tmp_path / "home"),
        T2V_REWRITE_BASE_URL=fake.base_url,
        T2V_REWRITE_MODEL_NAME="fake-rewriter",
    )
    fake.reply(Reply(content="<think>short</think>A lighthouse in fog."))

    done = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "rewrite", "a lighthouse", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rewritten"] == "A lighthouse in fog."


def test_a_bundled_example_image_name_works_for_i2v(clean_env, fake, capsys):
    assert (
        run(
            [
                "rewrite",
                "a city street",
                "--image",
                "city",
                "--base-url",
                fake.base_url,
                "--model",
                "fake-rewriter",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["prompt_version"] == "i2v-1"
    assert len(fake.chat_requests()[-1].image_sizes) == 1  # the bundled city image went with the prompt
