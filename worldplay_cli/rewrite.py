"""Prompt rewriting through an OpenAI-compatible chat-completions endpoint (typically a vLLM server).

Rewriting runs in the CLI before a job is enqueued, so workers never need the endpoint and the job spec
records exactly which prompt was generated. Text-to-video requests go to the `t2v` endpoint; a request with a
reference image goes to the `i2v` endpoint (a vision-language model) with the image as a JPEG data URL.

Failure policy: `best-effort` keeps the original prompt and returns a one-line warning; `required` raises.
Only transient failures (HTTP 5xx, connection errors) are retried, with exponential backoff. The API key is
sent in the Authorization header and nowhere else: never in results, messages or logs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import time
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from worldplay_cli.contract.errors import BadInput, WorldplayError

if TYPE_CHECKING:
    import httpx

    from worldplay_cli.contract.settings import RewriteEndpoint, Settings

log = logging.getLogger(__name__)

Policy = Literal["best-effort", "required"]
Task = Literal["t2v", "i2v"]

DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# Near-greedy sampling as in the official client, and room for a thinking model's reasoning before the answer.
TEMPERATURE = 0.1
MAX_TOKENS = 4096
JPEG_QUALITY = 90
ERROR_EXCERPT_CHARS = 200

_OFFICIAL_ENV = {
    "t2v": ("T2V_REWRITE_BASE_URL", "T2V_REWRITE_MODEL_NAME"),
    "i2v": ("I2V_REWRITE_BASE_URL", "I2V_REWRITE_MODEL_NAME"),
}


class RewriteResult(BaseModel):
    """What a rewrite produced; on a best-effort failure `rewritten == original` and `warning` says why."""

    model_config = ConfigDict(extra="forbid")

    original: str
    rewritten: str
    changed: bool
    model: str | None
    prompt_version: str
    endpoint: str | None
    warning: str | None


class RewriteFailed(WorldplayError):
    """The endpoint gave no usable rewrite and the policy is `required`."""


@dataclass(frozen=True)
class SystemPrompt:
    text: str
    version: str


class _EndpointFailure(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message = message
        self.hint = hint


class _TransientFailure(_EndpointFailure):
    """Worth another attempt: the server or the network may recover."""


@dataclass(frozen=True)
class _Endpoint:
    task: Task
    public_url: str
    timeout_s: float
    api_key: str | None = field(default=None, repr=False)
    # Credentials embedded in the base URL (a proxy with basic auth); used only when there is no API key.
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.basic_auth:
            token = base64.b64encode(":".join(self.basic_auth).encode("utf-8")).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return {}

    def name(self) -> str:
        return f"{self.task} rewrite endpoint {self.public_url}"

    def redact(self, text: str) -> str:
        """`text` from the server or the network stack, with the key masked should either echo it."""
        for secret in (self.api_key, *(self.basic_auth or ())):
            if secret:
                text = text.replace(secret, "********")
        return text


def rewrite_prompt(
    prompt: str,
    image: Path | None,
    settings: Settings,
    policy: Policy,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> RewriteResult:
    """Rewrite `prompt` (with `image` as the reference frame, if given) through the configured endpoint."""
    if policy not in ("best-effort", "required"):
        raise BadInput(f"unknown rewrite policy {policy!r}", "use 'best-effort' or 'required'")
    if not prompt.strip():
        raise BadInput("the prompt is empty", "pass a short description of the scene to rewrite")
    task: Task = "i2v" if image is not None else "t2v"
    system = load_system_prompt(task, settings.rewrite.system_prompt_file)
    configured: RewriteEndpoint = getattr(settings.rewrite, task)

    def kept(warning: str, endpoint: str | None) -> RewriteResult:
        return RewriteResult(
            original=prompt,
            rewritten=prompt,
            changed=False,
            model=configured.model,
            prompt_version=system.version,
            endpoint=endpoint,
            warning=warning,
        )

    if not configured.base_url:
        url_var, model_var = _OFFICIAL_ENV[task]
        message = f"no rewrite endpoint configured for {task}"
        hint = (
            f"set rewrite.{task}.base_url and rewrite.{task}.model in the config file, "
            f"or the environment variables {url_var} and {model_var}"
        )
        if policy == "required":
            raise BadInput(message, hint)
        return kept(f"{message}; kept the original prompt ({hint})", None)

    parts = urlsplit(configured.base_url.strip())
    endpoint = _Endpoint(
        task,
        public_endpoint(configured.base_url, task),
        configured.timeout_s,
        configured.api_key.get_secret_value() if configured.api_key else None,
        (unquote(parts.username), unquote(parts.password or "")) if parts.username else None,
    )
    user_content: str | list[dict[str, Any]] = prompt
    if image is not None:
        user_content = [
            {"type": "image_url", "image_url": {"url": image_data_url(image, settings.rewrite.max_image_size)}},
            {"type": "text", "text": prompt},
        ]
    messages = [{"role": "system", "content": system.text}, {"role": "user", "content": user_content}]
    try:
        rewritten, model = _complete(endpoint, configured.model, messages, max_attempts, backoff_s)
    except _EndpointFailure as failure:
        if policy == "required":
            raise RewriteFailed(failure.message, failure.hint) from None
        return kept(f"prompt rewrite failed, kept the original prompt: {failure.message}", endpoint.public_url)
    return RewriteResult(
        original=prompt,
        rewritten=rewritten,
        changed=rewritten != prompt.strip(),
        model=model,
        prompt_version=system.version,
        endpoint=endpoint.public_url,
        warning=None,
    )


def load_system_prompt(task: Task, override: Path | None = None) -> SystemPrompt:
    """The system prompt for `task`: the built-in one, or `override`.

    `override` is either one file used for both tasks, or a directory holding `rewrite_t2v.md` and/or
    `rewrite_i2v.md` (a task without its file there keeps the built-in prompt). A file may start with a
    `---` block declaring `version: ...`; an override's version always carries a hash of its text, so a
    manifest tells edited prompts apart.
    """
    file_name = f"rewrite_{task}.md"
    if override is not None:
        path = override / file_name if override.is_dir() else override
        if not override.is_dir() or path.is_file():
            try:
                raw = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(
                    f"cannot read system prompt file {path}: {getattr(exc, 'strerror', None) or exc}",
                    "fix rewrite.system_prompt_file (or --system-prompt)",
                ) from None
            text, declared = _split_front_matter(raw)
            if not text:
                raise BadInput(f"system prompt file {path} is empty", "write the instructions for the rewriting model")
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
            return SystemPrompt(text, f"{declared or 'custom'}@{digest}")
    raw = resources.files("worldplay_cli.prompts").joinpath(file_name).read_text(encoding="utf-8")
    text, declared = _split_front_matter(raw)
    return SystemPrompt(text, declared or task)


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def _split_front_matter(raw: str) -> tuple[str, str | None]:
    raw = raw.replace("\r\n", "\n")
    match = _FRONT_MATTER.match(raw)
    if not match:
        return raw.strip(), None
    fields = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return raw[match.end() :].strip(), fields.get("version") or None


def public_endpoint(base_url: str, task: Task = "t2v") -> str:
    """The base URL safe to show and store: no user info, query or fragment (places credentials hide)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(
            f"rewrite.{task}.base_url is not an http(s) URL: {parts.scheme or '?'}://{parts.hostname or '?'}",
            "use the server's OpenAI base URL, e.g. http://localhost:8000/v1",
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def image_data_url(image: Path, max_size: int) -> str:
    """`image` as an RGB JPEG data URL whose longest side is at most `max_size` pixels."""
    from PIL import Image, ImageOps

    try:
        with Image.open(image) as opened:
            picture = _flatten_to_rgb(ImageOps.exif_transpose(opened))
    except FileNotFoundError:
        raise BadInput(f"image not found: {image}", "pass the path of the reference image") from None
    except OSError as exc:
        raise BadInput(f"cannot read image {image}: {exc}", "pass a PNG, JPEG or WebP file") from None
    picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _flatten_to_rgb(picture):
    from PIL import Image

    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info)
    if not has_alpha:
        return picture.convert("RGB")
    # A plain RGB conversion turns transparent pixels black, which the vision model would then describe.
    rgba = picture.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, "white")
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _complete(
    endpoint: _Endpoint,
    model: str | None,
    messages: list[dict[str, Any]],
    max_attempts: int,
    backoff_s: float,
) -> tuple[str, str]:
    import httpx

    # Requests go to the public URL: httpx would otherwise log the URL's credentials and let them override the key.
    with httpx.Client(timeout=endpoint.timeout_s, headers=endpoint.headers()) as client:
        if not model:
            model = _served_model(client, endpoint, max_attempts, backoff_s)
        body = {
            "model": model,
            "messages": messages,
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
            "stream": False,
        }
        data = _request_json(client, "POST", "/chat/completions", body, endpoint, max_attempts, backoff_s)
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _EndpointFailure(
            f"{endpoint.name()} answered without choices[0].message.content",
            "is this an OpenAI-compatible chat-completions endpoint?",
        ) from None
    if choice.get("finish_reason") == "length":
        raise _EndpointFailure(
            f"{endpoint.name()} cut the answer off at {MAX_TOKENS} tokens",
            "use a model that answers more briefly, or a system prompt asking for less reasoning",
        )
    try:
        answer = extract_answer(content)
    except ValueError as exc:
        raise _EndpointFailure(
            f"{endpoint.name()} gave an unusable answer: {exc}", "try again, or another model or system prompt"
        ) from None
    served = data.get("model")
    return answer, served if isinstance(served, str) and served else model


def _served_model(client: httpx.Client, endpoint: _Endpoint, max_attempts: int, backoff_s: float) -> str:
    """The one model a server serves (vLLM serves one per process), for setups that only give a base URL."""
    data = _request_json(client, "GET", "/models", None, endpoint, max_attempts, backoff_s)
    entries = data.get("data")
    ids = [entry.get("id") for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
    ids = [model_id for model_id in ids if isinstance(model_id, str) and model_id]
    if len(ids) != 1:
        raise _EndpointFailure(
            f"{endpoint.name()} serves {len(ids)} models ({', '.join(ids[:5]) or 'none listed'}), cannot pick one",
            f"set rewrite.{endpoint.task}.model (or {_OFFICIAL_ENV[endpoint.task][1]})",
        )
    return ids[0]


def _request_json(
    client: httpx.Client,
    method: str,
    path: str,
    body: dict | None,
    endpoint: _Endpoint,
    max_attempts: int,
    backoff_s: float,
) -> dict:
    attempts = max(1, max_attempts)
    attempt = 1
    while True:
        try:
            return _request_once(client, method, endpoint.public_url + path, body, endpoint)
        except _TransientFailure as failure:
            if attempt >= attempts:
                suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                raise _EndpointFailure(failure.message + suffix, failure.hint) from None
            delay = min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            attempt += 1
            log.warning("%s; retrying in %.2f s (attempt %d of %d)", failure.message, delay, attempt, attempts)
            time.sleep(delay)


def _request_once(client: httpx.Client, method: str, url: str, body: dict | None, endpoint: _Endpoint) -> dict:
    import httpx

    try:
        response = client.request(method, url, json=body)
    except httpx.ConnectTimeout:
        raise _TransientFailure(
            f"{endpoint.name()} did not accept a connection within {endpoint.timeout_s:g} s",
            "is the server running and reachable from this machine?",
        ) from None
    except httpx.TimeoutException:
        # A slow model stays slow: retrying would multiply the wait, so a read timeout fails at once.
        raise _EndpointFailure(
            f"{endpoint.name()} timed out after {endpoint.timeout_s:g} s",
            f"raise rewrite.{endpoint.task}.timeout_s, or use a faster model",
        ) from None
    except httpx.TransportError as exc:
        raise _TransientFailure(
            f"{endpoint.name()} is unreachable ({type(exc).__name__}: {endpoint.redact(_one_line(str(exc)))})",
            "is the server running and reachable from this machine?",
        ) from None
    status = response.status_code
    if status >= 400:
        failure_type = _TransientFailure if status >= 500 else _EndpointFailure
        detail = endpoint.redact(_error_detail(response))
        message = f"{endpoint.name()} returned HTTP {status}" + (f": {detail}" if detail else "")
        raise failure_type(message, _status_hint(status, endpoint))
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _EndpointFailure(
            f"{endpoint.name()} returned HTTP {status} with a body that is not a JSON object: "
            f"{endpoint.redact(_one_line(response.text)) or '(empty)'}",
            "is this an OpenAI-compatible endpoint? the base URL usually ends in /v1",
        )
    return data


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message (OpenAI and vLLM put it under `error.message` or `message`)."""
    try:
        data = response.json()
    except ValueError:
        return _one_line(response.text)
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message")):
            if isinstance(candidate, str) and candidate:
                return _one_line(candidate)
    return _one_line(response.text)


def _status_hint(status: int, endpoint: _Endpoint) -> str:
    if status in (401, 403):
        return f"check rewrite.{endpoint.task}.api_key"
    if status == 404:
        return f"check rewrite.{endpoint.task}.base_url (it usually ends in /v1) and rewrite.{endpoint.task}.model"
    if status >= 500:
        return "the server failed; check its logs"
    return f"check rewrite.{endpoint.task}.model and that the server is OpenAI-compatible"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_EXCERPT_CHARS else text[: ERROR_EXCERPT_CHARS - 3] + "..."


_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)
_CLOSE_THINK = re.compile(r"</think>", re.I)
_OPEN_THINK = re.compile(r"<think>", re.I)
_FENCED = re.compile(r"\A```[\w-]*\n(.*?)\n?```\Z", re.S)
_WRAPPING_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"))
_LOOP_MIN_BYTES = 400
# Prose compresses to about half its size; a model stuck repeating itself compresses far better.
_LOOP_COMPRESSION_RATIO = 0.2


def extract_answer(content: Any) -> str:
    """The rewritten prompt inside a model's reply; raises ValueError for an empty or degenerate one."""
    if not isinstance(content, str):
        raise ValueError("the reply has no text")
    text = _THINK_BLOCK.sub("", content)
    # Thinking models served by vLLM often get `<think>` from the chat template, so only `</think>` arrives.
    closings = list(_CLOSE_THINK.finditer(text))
    if closings:
        text = text[closings[-1].end() :]
    if _OPEN_THINK.search(text):
        raise ValueError("the reasoning never finished (<think> without </think>)")
    text = text.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1).strip()
    for opening, closing in _WRAPPING_QUOTES:
        inner = text[1:-1]
        # Only quotes around the whole answer: quoted on-screen text inside the prompt must stay verbatim.
        wrapped = len(text) >= 2 and text[0] == opening and text[-1] == closing
        if wrapped and opening not in inner and closing not in inner:
            text = inner.strip()
    if not any(char.isalnum() for char in text):
        raise ValueError("the answer is empty")
    encoded = text.encode("utf-8")
    if len(encoded) >= _LOOP_MIN_BYTES and len(zlib.compress(encoded)) / len(encoded) < _LOOP_COMPRESSION_RATIO:
        raise ValueError("the answer repeats itself")
    return text
