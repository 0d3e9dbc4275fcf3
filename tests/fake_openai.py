"""A small OpenAI-compatible server on 127.0.0.1 for rewrite tests: real HTTP, scripted answers.

It speaks `GET /v1/models` and `POST /v1/chat/completions`, validates requests the way a strict vLLM server
would (unknown model → 404, malformed messages → 400, image parts must be JPEG data URLs no larger than
`max_image_size`), and records every request. Tests queue `Reply`s; with none queued it answers with a
deterministic rewrite of the user's text.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DATA_URL_PREFIX = "data:image/jpeg;base64,"


@dataclass
class Reply:
    """One scripted answer. `raw` replaces the whole body; `delay_s` stalls before answering."""

    status: int = 200
    content: str | None = "A rewritten prompt."
    finish_reason: str = "stop"
    raw: bytes | None = None
    delay_s: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    image_sizes: list[tuple[int, int]] = field(default_factory=list)


class FakeOpenAI:
    def __init__(
        self, models: tuple[str, ...] = ("fake-rewriter",), api_key: str | None = None, max_image_size: int = 1024
    ):
        self.models = list(models)
        self.api_key = api_key
        self.max_image_size = max_image_size
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A short poll interval keeps `shutdown()` (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def chat_requests(self) -> list[Recorded]:
        return [request for request in self.requests if request.path == "/v1/chat/completions"]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()  # releases handlers stalled by `delay_s`
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                fake._handle(self, "GET", None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                fake._handle(self, "POST", self.rfile.read(length))

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler, method: str, raw_body: bytes | None) -> None:
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body
        record = Recorded(method, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
        self.requests.append(record)
        reply = self._respond(record)
        if reply.delay_s and self._stopping.wait(reply.delay_s):
            return
        if reply.raw is not None:
            data = reply.raw
        elif reply.status >= 400:
            data = _error(reply.status, "scripted failure")
        else:
            data = self._completion(body["model"], reply)
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _respond(self, record: Recorded) -> Reply:
        """A validation error, the model list, or the next scripted reply."""
        if self.api_key is not None and record.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, raw=_error(401, "invalid API key"))
        if record.method == "GET" and record.path == "/v1/models":
            models = [{"id": name, "object": "model"} for name in self.models]
            return Reply(raw=json.dumps({"object": "list", "data": models}).encode())
        if record.method != "POST" or record.path != "/v1/chat/completions":
            return Reply(404, raw=_error(404, f"no route {record.method} {record.path}"))
        problem = self._check_chat(record)
        if problem:
            status, message = problem
            return Reply(status, raw=_error(status, message))
        if self.replies:
            return self.replies.popleft()
        return Reply(content=f"A detailed, objective scene: {_user_text(record.body)}.")

    def _check_chat(self, record: Recorded) -> tuple[int, str] | None:
        body = record.body
        if not isinstance(body, dict):
            return 400, "body is not a JSON object"
        if body.get("model") not in self.models:
            return 404, f"The model `{body.get('model')}` does not exist."
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "messages must be a non-empty list"
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                return 400, f"bad message {message!r:.80}"
            content = message.get("content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list) or not content:
                return 400, "content must be a string or a non-empty list of parts"
            for part in content:
                problem = self._check_part(part, record)
                if problem:
                    return 400, problem
        return None

    def _check_part(self, part: Any, record: Recorded) -> str | None:
        from PIL import Image

        if not isinstance(part, dict):
            return "content part is not an object"
        if part.get("type") == "text":
            return None if isinstance(part.get("text"), str) else "text part without text"
        if part.get("type") != "image_url":
            return f"unknown content part type {part.get('type')!r}"
        url = (part.get("image_url") or {}).get("url")
        if not isinstance(url, str) or not url.startswith(DATA_URL_PREFIX):
            return "image_url.url must be a data:image/jpeg;base64 URL"
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(url[len(DATA_URL_PREFIX) :], validate=True)))
            picture.load()
        except (binascii.Error, OSError) as exc:
            return f"image does not decode: {exc}"
        if picture.format != "JPEG" or picture.mode != "RGB":
            return f"image must be an RGB JPEG, got {picture.format} {picture.mode}"
        if max(picture.size) > self.max_image_size:
            return f"image {picture.size} exceeds {self.max_image_size} px"
        record.image_sizes.append(picture.size)
        return None

    def _completion(self, model: str, reply: Reply) -> bytes:
        return json.dumps(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        ).encode()


def _user_text(body: dict) -> str:
    content = [message for message in body["messages"] if message["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part["text"] for part in content if part.get("type") == "text")


def _error(status: int, message: str) -> bytes:
    """vLLM's error body shape."""
    return json.dumps({"object": "error", "message": message, "type": "BadRequestError", "code": status}).encode()
