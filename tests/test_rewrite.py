"""Prompt rewriting against a real chat-completions server on 127.0.0.1 (tests/fake_openai.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path

import pytest
from PIL import Image

from fake_openai import FakeOpenAI, Reply
from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.contract.settings import Settings, load_settings
from worldplay_cli.rewrite import RewriteFailed, RewriteResult, extract_answer, load_system_prompt, rewrite_prompt

FAST = {"max_attempts": 3, "backoff_s": 0.01}
SECRET = "sk-test-4f9c2b7e"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def settings_for(tmp_path: Path, **rewrite) -> Settings:
    return load_settings({"rewrite": rewrite}, config_path=tmp_path / "absent.toml", environ={})


def t2v_settings(tmp_path: Path, fake: FakeOpenAI, **endpoint) -> Settings:
    return settings_for(tmp_path, t2v={"base_url": fake.base_url, "model": "fake-rewriter", **endpoint})


def test_t2v_rewrite_sends_system_and_user_messages(tmp_path, fake):
    result = rewrite_prompt("a cat on a porch", None, t2v_settings(tmp_path, fake), "required", **FAST)

    assert result == RewriteResult(
        original="a cat on a porch",
        rewritten="A detailed, objective scene: a cat on a porch.",
        changed=True,
        model="fake-rewriter",
        prompt_version=load_system_prompt("t2v").version,
        endpoint=fake.base_url,
        warning=None,
    )
    (request,) = fake.chat_requests()
    system, user = request.body["messages"]
    assert system == {"role": "system", "content": load_system_prompt("t2v").text}
    assert user == {"role": "user", "content": "a cat on a porch"}
    assert request.body["temperature"] == pytest.approx(0.1) and request.body["stream"] is False
    assert "authorization" not in request.headers


def test_official_environment_variables_select_the_endpoint(tmp_path, fake):
    environ = {"T2V_REWRITE_BASE_URL": fake.base_url, "T2V_REWRITE_MODEL_NAME": "fake-rewriter"}
    settings = load_settings(config_path=tmp_path / "absent.toml", environ=environ)

    result = rewrite_prompt("a lighthouse", None, settings, "required", **FAST)

    assert result.changed and result.endpoint == fake.base_url


@pytest.mark.parametrize(
    "content",
    [
        "<think>The user wants a lighthouse.\nAdd fog.</think>\n\nA lighthouse in fog.",
        "The user wants a lighthouse; the template opened the think block.</think>A lighthouse in fog.",
        "<THINK>plan</THINK>```text\nA lighthouse in fog.\n```",
        '"A lighthouse in fog."',
    ],
)
def test_reasoning_and_wrapping_are_stripped(tmp_path, fake, content):
    fake.reply(Reply(content=content))

    result = rewrite_prompt("a lighthouse", None, t2v_settings(tmp_path, fake), "required", **FAST)

    assert result.rewritten == "A lighthouse in fog."


def test_quoted_on_screen_text_survives_extraction():
    answer = 'A neon sign reads "OPEN 24/7" above the door, and a poster says "Bar".'
    assert extract_answer(answer) == answer


def test_server_errors_are_retried_until_success(tmp_path, fake, caplog):
    fake.reply(Reply(503), Reply(502), Reply(content="A lighthouse in fog."))

    with caplog.at_level(logging.WARNING, logger="worldplay_cli.rewrite"):
        result = rewrite_prompt("a lighthouse", None, t2v_settings(tmp_path, fake), "required", **FAST)

    assert result.rewritten == "A lighthouse in fog." and result.warning is None
    assert len(fake.chat_requests()) == 3
    endpoint = f"t2v rewrite endpoint {fake.base_url}"
    assert [record.getMessage() for record in caplog.records] == [
        f"{endpoint} returned HTTP 503: scripted failure; retrying in 0.01 s (attempt 2 of 3)",
        f"{endpoint} returned HTTP 502: scripted failure; retrying in 0.02 s (attempt 3 of 3)",
    ]


def test_persistent_server_errors_warn_and_keep_the_prompt(tmp_path, fake):
    fake.reply(*[Reply(500)] * 3)

    result = rewrite_prompt("a lighthouse", None, t2v_settings(tmp_path, fake), "best-effort", **FAST)

    assert (result.rewritten, result.changed, result.endpoint) == ("a lighthouse", False, fake.base_url)
    assert result.warning == (
        f"prompt rewrite failed, kept the original prompt: t2v rewrite endpoint {fake.base_url} "
        "returned HTTP 500: scripted failure (after 3 attempts)"
    )
    assert "\n" not in result.warning
    assert len(fake.chat_requests()) == 3


@pytest.mark.parametrize(
    ("model", "status", "detail", "hint"),
    [
        ("no-such-model", 404, "The model `no-such-model` does not exist.", "ends in /v1"),
        ("fake-rewriter", 422, "scripted failure", "rewrite.t2v.model"),
    ],
)
def test_client_errors_fail_at_once(tmp_path, fake, model, status, detail, hint):
    fake.reply(Reply(status))
    settings = t2v_settings(tmp_path, fake, model=model)

    with pytest.raises(RewriteFailed) as caught:
        rewrite_prompt("a lighthouse", None, settings, "required", **FAST)

    assert caught.value.message == f"t2v rewrite endpoint {fake.base_url} returned HTTP {status}: {detail}"
    assert hint in caught.value.hint
    assert len(fake.requests) == 1


def test_read_timeout_fails_without_retrying(tmp_path, fake):
    fake.reply(Reply(content="too late", delay_s=5))

    result = rewrite_prompt("a lighthouse", None, t2v_settings(tmp_path, fake, timeout_s=0.3), "best-effort", **FAST)

    assert result.warning.endswith(f"t2v rewrite endpoint {fake.base_url} timed out after 0.3 s")
    assert len(fake.requests) == 1


def test_unreachable_endpoint_is_retried_then_reported(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(tmp_path, t2v={"base_url": f"http://127.0.0.1:{port}/v1", "model": "m"})

    with pytest.raises(RewriteFailed) as caught:
        rewrite_prompt("a lighthouse", None, settings, "required", **FAST)

    assert caught.value.message.startswith(f"t2v rewrite endpoint http://127.0.0.1:{port}/v1 is unreachable (Connect")
    assert caught.value.message.endswith("(after 3 attempts)")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(raw=b"<html>proxy says hi</html>"), "not a JSON object: <html>proxy says hi</html>"),
        (Reply(raw=b'{"id": "x", "choices": []}'), "answered without choices[0].message.content"),
        (Reply(content=None), "unusable answer: the reply has no text"),
        (Reply(content="  \n "), "unusable answer: the answer is empty"),
        (Reply(content="<think>planning...</think> ..."), "unusable answer: the answer is empty"),
        (Reply(content="<think>still planning the"), "unusable answer: the reasoning never finished"),
        (Reply(content="and the camera moves forward " * 30), "unusable answer: the answer repeats itself"),
        (Reply(content="A lighthouse in", finish_reason="length"), "cut the answer off at 4096 tokens"),
    ],
)
def test_malformed_and_degenerate_answers_are_rejected(tmp_path, fake, reply, expected):
    fake.reply(reply)

    with pytest.raises(RewriteFailed) as caught:
        rewrite_prompt("a lighthouse", None, t2v_settings(tmp_path, fake), "required", **FAST)

    assert caught.value.message.startswith(f"t2v rewrite endpoint {fake.base_url} ")
    assert expected in caught.value.message
    assert len(fake.requests) == 1


def test_i2v_sends_a_jpeg_thumbnail_the_server_accepts(tmp_path):
    image = tmp_path / "frame.png"
    Image.new("RGBA", (1200, 600), (200, 40, 40, 128)).save(image)
    with FakeOpenAI(models=("fake-vl",), max_image_size=256) as fake:
        settings = settings_for(tmp_path, i2v={"base_url": fake.base_url, "model": "fake-vl"}, max_image_size=256)

        result = rewrite_prompt("the door opens", image, settings, "required", **FAST)

    assert result.rewritten == "A detailed, objective scene: the door opens."
    assert result.prompt_version == load_system_prompt("i2v").version
    (request,) = fake.chat_requests()
    assert request.image_sizes == [(256, 128)]
    system, user = request.body["messages"]
    assert system["content"] == load_system_prompt("i2v").text
    assert [part["type"] for part in user["content"]] == ["image_url", "text"]
    assert user["content"][1]["text"] == "the door opens"


def test_i2v_thumbnail_larger_than_the_server_allows_is_a_400(tmp_path):
    image = tmp_path / "frame.jpg"
    Image.new("RGB", (600, 300), "navy").save(image)
    with FakeOpenAI(models=("fake-vl",), max_image_size=256) as fake:
        settings = settings_for(tmp_path, i2v={"base_url": fake.base_url, "model": "fake-vl"}, max_image_size=512)

        with pytest.raises(RewriteFailed, match=r"HTTP 400: image \(512, 256\) exceeds 256 px"):
            rewrite_prompt("the door opens", image, settings, "required", **FAST)


@pytest.mark.parametrize("policy", ["best-effort", "required"])
def test_unreadable_image_is_bad_input_under_any_policy(tmp_path, fake, policy):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    settings = settings_for(tmp_path, i2v={"base_url": fake.base_url, "model": "fake-rewriter"})

    with pytest.raises(BadInput, match="cannot read image"):
        rewrite_prompt("x", not_an_image, settings, policy)
    with pytest.raises(BadInput, match="image not found"):
        rewrite_prompt("x", tmp_path / "missing.png", settings, policy)
    assert fake.requests == []


def test_missing_endpoint_warns_or_is_bad_input(tmp_path):
    settings = settings_for(tmp_path)

    result = rewrite_prompt("a cat", tmp_path / "unused.png", settings, "best-effort")
    assert (result.rewritten, result.changed, result.endpoint) == ("a cat", False, None)
    assert result.warning.startswith("no rewrite endpoint configured for i2v; kept the original prompt")

    with pytest.raises(BadInput) as caught:
        rewrite_prompt("a cat", None, settings, "required")
    assert caught.value.message == "no rewrite endpoint configured for t2v"
    assert "T2V_REWRITE_BASE_URL" in caught.value.hint and "rewrite.t2v.base_url" in caught.value.hint


def test_api_key_is_sent_but_never_shown(tmp_path, caplog):
    with FakeOpenAI(api_key=SECRET) as fake, caplog.at_level(logging.DEBUG):
        base_url = fake.base_url.replace("http://", "http://user:pw@")
        good = t2v_settings(tmp_path, fake, api_key=SECRET, base_url=base_url)
        fake.reply(Reply(503), Reply(content=f"A scene. (the key was {SECRET})"))
        result = rewrite_prompt("a cat", None, good, "required", **FAST)
        bad = t2v_settings(tmp_path, fake, api_key="sk-wrong-key")
        with pytest.raises(RewriteFailed) as caught:
            rewrite_prompt("a cat", None, bad, "required", **FAST)

    assert fake.chat_requests()[0].headers["authorization"] == f"Bearer {SECRET}"
    assert result.endpoint == fake.base_url
    shown = result.model_copy(update={"rewritten": ""}).model_dump_json() + caplog.text + str(caught.value.message)
    assert SECRET not in shown and "sk-wrong-key" not in shown and "user:pw" not in shown
    assert "HTTP 401" in caught.value.message and "api_key" in caught.value.hint


def test_model_is_discovered_when_only_a_base_url_is_set(tmp_path, fake):
    result = rewrite_prompt("a cat", None, settings_for(tmp_path, t2v={"base_url": fake.base_url}), "required")

    assert result.model == "fake-rewriter"
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]


def test_system_prompt_override_file_and_directory(tmp_path, fake):
    single = tmp_path / "mine.md"
    single.write_text("---\nversion: studio-3\n---\nRewrite tersely.\n")
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "rewrite_t2v.md").write_text("Rewrite as a haiku.")

    settings = settings_for(
        tmp_path, t2v={"base_url": fake.base_url, "model": "fake-rewriter"}, system_prompt_file=str(single)
    )

    by_file = rewrite_prompt("a cat", None, settings, "required")
    assert by_file.prompt_version.startswith("studio-3@") and len(by_file.prompt_version) == len("studio-3@") + 12
    assert fake.chat_requests()[-1].body["messages"][0]["content"] == "Rewrite tersely."

    assert load_system_prompt("t2v", folder).text == "Rewrite as a haiku."
    assert load_system_prompt("t2v", folder).version.startswith("custom@")
    assert load_system_prompt("i2v", folder) == load_system_prompt("i2v")
    with pytest.raises(BadInput, match="cannot read system prompt file"):
        load_system_prompt("t2v", tmp_path / "missing.md")


# Manifests record the prompt version, so the text behind a version must never change silently:
# editing a built-in prompt means bumping its `version:` line and updating this table.
BUILTIN_PROMPTS = {"t2v": ("t2v-1", "72ff8f91c855"), "i2v": ("i2v-1", "9fe2434aef9e")}


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_builtin_prompt_text_is_pinned_to_its_version(task):
    prompt = load_system_prompt(task)

    assert (prompt.version, hashlib.sha256(prompt.text.encode()).hexdigest()[:12]) == BUILTIN_PROMPTS[task]
    assert not prompt.text.startswith("---") and "quotation marks" in prompt.text


@pytest.mark.parametrize("bad", ["localhost:8000/v1", "ftp://host/v1"])
def test_non_http_base_url_is_bad_input(tmp_path, bad):
    with pytest.raises(BadInput, match="not an http"):
        rewrite_prompt("a cat", None, settings_for(tmp_path, t2v={"base_url": bad, "model": "m"}), "best-effort")


def test_result_is_json_ready_and_strict():
    result = RewriteResult(
        original="a", rewritten="b", changed=True, model="m", prompt_version="t2v-1", endpoint=None, warning=None
    )
    assert RewriteResult.model_validate(json.loads(result.model_dump_json())) == result
    with pytest.raises(ValueError):
        RewriteResult.model_validate({**result.model_dump(), "api_key": "x"})
    with pytest.raises(WorldplayError):
        rewrite_prompt("   ", None, Settings(), "required")
