"""A real HTTP server on 127.0.0.1 speaking the parts of the Hugging Face Hub API huggingface_hub uses,
plus ModelScope's file API, serving small generated repositories.

Hub: `GET /api/models/{repo}[/revision/{rev}]` (siblings with sizes, blob ids and LFS sha256 when
`blobs=true`), `GET /api/models/{repo}/tree/{rev}[/{path}]`, `POST /api/models/{repo}/paths-info/{rev}`,
`GET /api/models/{repo}/auth-check`, `HEAD|GET /{repo}/resolve/{rev}/{path}` (X-Repo-Commit, ETag,
X-Linked-Etag, X-Linked-Size; LFS files redirect to `/cdn/{sha256}` on `localhost`, a different origin,
like the real CDN), Range requests answered with 206 + Content-Range. Gated repos answer 401 without a
token and 403 with a token that has no access, with `X-Error-Code: GatedRepo`.
ModelScope: `GET /api/v1/models/{repo}/repo/files` and `GET /api/v1/models/{repo}/repo?FilePath=..`.

Every request is recorded (method, path, Range, whether credentials were sent); `drop_after(path, n)`
makes the next GET of that file send `n` bytes and then cut the connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".pt", ".bin", ".h5", ".msgpack")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    tokens: frozenset[str] = frozenset()
    commit: str = ""

    def __post_init__(self):
        if not self.commit:
            self.commit = hashlib.sha1("\n".join([self.repo_id, *sorted(self.files)]).encode()).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool
    host: str


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    modelscope: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._drops: list[tuple[str, int]] = []
        self._served: list[tuple[str, int]] = []
        self._server: ThreadingHTTPServer | None = None

    # -- setup ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False, tokens=()) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files), gated=gated, tokens=frozenset(tokens))
        self.repos[repo_id] = repo
        return repo

    def add_modelscope_repo(self, repo_id: str, files: dict[str, bytes]) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files))
        self.modelscope[repo_id] = repo
        return repo

    def drop_after(self, file_path: str, after_bytes: int, times: int = 1) -> None:
        """Queue `times` cuts: the next GETs of a file whose path ends with `file_path` stop after `after_bytes`."""
        with self._lock:
            self._drops.extend([(file_path, after_bytes)] * times)

    def _take_drop(self, file_path: str) -> int | None:
        with self._lock:
            for index, (suffix, after) in enumerate(self._drops):
                if file_path.endswith(suffix):
                    del self._drops[index]
                    return after
        return None

    def served_bytes(self, file_path: str) -> int:
        """Body bytes sent for GETs of a file (by path suffix), across all requests."""
        with self._lock:
            return sum(count for path, count in self._served if path.endswith(file_path))

    def _count(self, file_path: str, count: int) -> None:
        with self._lock:
            self._served.append((file_path, count))

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self._served.clear()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-hub").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        return f"http://localhost:{self.port}/cdn"

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def blob_by_sha256(self, sha256: str) -> tuple[str, bytes] | None:
        for repo in [*self.repos.values(), *self.modelscope.values()]:
            for path, data in repo.files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return path, data
        return None


_REPO = r"(?P<repo>[^/]+/[^/]+)"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _record(self) -> None:
        self.fake.record(
            Request(
                self.command,
                unquote(self.path),
                self.headers.get("Range"),
                self.headers.get("Authorization") is not None,
                self.headers.get("Host", ""),
            )
        )

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _revision_ok(self, repo: FakeRepo, revision: str) -> bool:
        if unquote(revision) in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", "Invalid rev id")
        return False

    def _gate(self, repo: FakeRepo) -> bool:
        if not repo.gated:
            return True
        token = self._token()
        if token is None:
            self._error(401, "GatedRepo", "Access to this model is restricted. You must be authenticated.")
            return False
        if token not in repo.tokens:
            self._error(403, "GatedRepo", "Access to this model is restricted and you are not in the authorized list.")
            return False
        return True

    def do_HEAD(self) -> None:
        self._record()
        self._route()

    def do_GET(self) -> None:
        self._record()
        self._route()

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        match = re.fullmatch(rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)", urlsplit(self.path).path)
        if not match:
            return self._error(404, "NotFound", "no such route")
        repo = self._repo(match["repo"])
        if repo and self._revision_ok(repo, match["rev"]):
            paths = form.get("paths", [])
            self._json([self._tree_entry(repo, path) for path in paths if path in repo.files])

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        routes = (
            (rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", self._model_info),
            (rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
            (rf"/api/models/{_REPO}/auth-check", self._auth_check),
            (rf"/api/v1/models/{_REPO}/repo/files", self._ms_files),
            (rf"/api/v1/models/{_REPO}/repo", self._ms_file),
            (r"/cdn/(?P<sha>[0-9a-f]{64})", self._cdn),
            (rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        )
        for pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match:
                return handler(match, query)
        self._error(404, "NotFound", "no such route")

    # -- Hub API ---------------------------------------------------------------------------------
    def _model_info(self, match, query) -> None:
        repo = self._repo(match["repo"])
        if repo is None or not self._revision_ok(repo, match["rev"] or "main"):
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, data in sorted(repo.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(data), blobId=git_sha1(data))
                if repo.is_lfs(path):
                    sibling["lfs"] = {"sha256": repo.sha256(path), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            {
                "_id": repo.commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": False,
                "disabled": False,
                "gated": "manual" if repo.gated else False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2025-12-17T00:00:00.000Z",
                "createdAt": "2025-12-17T00:00:00.000Z",
            }
        )

    def _tree_entry(self, repo: FakeRepo, path: str) -> dict:
        data = repo.files[path]
        entry = {"type": "file", "oid": git_sha1(data), "size": len(data), "path": path}
        if repo.is_lfs(path):
            entry["lfs"] = {"oid": repo.sha256(path), "size": len(data), "pointerSize": 134}
        return entry

    def _tree(self, match, query) -> None:
        repo = self._repo(match["repo"])
        if repo is None or not self._revision_ok(repo, match["rev"]):
            return
        prefix = (match["sub"] or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path in sorted(repo.files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            entries.append(self._tree_entry(repo, path))
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": folder} for folder in sorted(folders)]
        self._json(entries)

    def _auth_check(self, match, query) -> None:
        repo = self._repo(match["repo"])
        if repo is not None and self._gate(repo):
            self._json({"ok": True})

    def _resolve(self, match, query) -> None:
        repo = self._repo(match["repo"])
        if repo is None or not self._revision_ok(repo, match["rev"]) or not self._gate(repo):
            return
        path = match["file"]
        if path not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.commit})
        data = repo.files[path]
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            sha = repo.sha256(path)
            headers.update(
                {
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_sha1(data)}"',
                    "Location": f"{self.fake.cdn_url}/{sha}",
                }
            )
            return self._send(302, b"", headers)
        headers["ETag"] = f'"{git_sha1(data)}"'
        self._serve_bytes(data, path, headers)

    def _cdn(self, match, query) -> None:
        found = self.fake.blob_by_sha256(match["sha"])
        if found is None:
            return self._error(404, "NotFound", "no such object")
        path, data = found
        self._serve_bytes(data, path, {"Accept-Ranges": "bytes", "ETag": f'"{match["sha"]}"'})

    # -- ModelScope ------------------------------------------------------------------------------
    def _ms_repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.fake.modelscope.get(repo_id)
        if repo is None:
            self._json({"Code": 10010205001, "Message": "model not found", "Success": False}, 404)
        return repo

    def _ms_files(self, match, query) -> None:
        repo = self._ms_repo(match["repo"])
        if repo is None:
            return
        files = [
            {
                "Name": path.rsplit("/", 1)[-1],
                "Path": path,
                "Type": "blob",
                "Size": len(data),
                "Sha256": hashlib.sha256(data).hexdigest(),
                "IsLFS": repo.is_lfs(path),
                "Revision": repo.commit,
            }
            for path, data in sorted(repo.files.items())
        ]
        folders = sorted({path.rsplit("/", 1)[0] for path in repo.files if "/" in path})
        files += [
            {"Name": folder, "Path": folder, "Type": "tree", "Size": 0, "Sha256": "", "Revision": repo.commit}
            for folder in folders
        ]
        self._json({"Code": 200, "Success": True, "Message": "success", "Data": {"Files": files}})

    def _ms_file(self, match, query) -> None:
        repo = self._ms_repo(match["repo"])
        if repo is None:
            return
        path = query.get("FilePath", [""])[0]
        if path not in repo.files or query.get("Revision", ["master"])[0] not in ("master", repo.commit):
            return self._json({"Code": 10010205001, "Message": "file not found", "Success": False}, 404)
        self._serve_bytes(repo.files[path], path, {"Accept-Ranges": "bytes"}, content_type="application/octet-stream")

    # -- bytes with Range and injected drops ---------------------------------------------------------
    def _serve_bytes(self, data: bytes, key: str, headers: dict, content_type="application/octet-stream") -> None:
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if match is None or int(match[1]) >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            start, status = int(match[1]), 206
            end = int(match[2]) if match[2] else len(data) - 1
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            data_slice = data[start : end + 1]
        else:
            data_slice = data
        drop = self.fake._take_drop(key) if self.command == "GET" else None
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data_slice)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if drop is not None:
            self.wfile.write(data_slice[:drop])
            self.wfile.flush()
            self.fake._count(key, min(drop, len(data_slice)))
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data_slice)
        self.fake._count(key, len(data_slice))


GOOD_TOKEN = "hf_fakeGOODtoken0123456789"


def _bytes(seed: str, size: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def add_worldplay_repos(hub: FakeHub, action_size: int = 300_000) -> None:
    """Small stand-ins for every repository the catalog names, with files the patterns must skip."""
    hub.add_repo(
        "tencent/HunyuanVideo-1.5",
        {
            "README.md": b"# HunyuanVideo-1.5\n",
            "vae/config.json": b'{"latent_channels": 32}',
            "vae/diffusion_pytorch_model.safetensors": _bytes("vae", 40_000),
            "scheduler/scheduler_config.json": b'{"shift": 7.0}',
            "transformer/480p_i2v/config.json": b'{"hidden_size": 2048}',
            "transformer/480p_i2v/diffusion_pytorch_model.safetensors": _bytes("dit", 120_000),
            "transformer/720p_t2v/diffusion_pytorch_model.safetensors": _bytes("t2v", 90_000),
            "transformer/720p_sr_distilled/config.json": b'{"sr": true}',
            "transformer/720p_sr_distilled/diffusion_pytorch_model.safetensors": _bytes("sr", 50_000),
            "upsampler/720p_sr_distilled/config.json": b'{"up": 2}',
            "upsampler/720p_sr_distilled/diffusion_pytorch_model.safetensors": _bytes("up", 20_000),
        },
    )
    hub.add_repo(
        "tencent/HY-WorldPlay",
        {
            "README.md": b"# HY-WorldPlay\n",
            "bidirectional_model/diffusion_pytorch_model.safetensors": _bytes("bi", action_size),
            "ar_model/diffusion_pytorch_model.safetensors": _bytes("ar", action_size),
            "ar_rl_model/diffusion_pytorch_model.safetensors": _bytes("ar-rl", action_size),
            "ar_distilled_action_model/model.safetensors": _bytes("ar-distilled", action_size),
            "wan/model.safetensors": _bytes("wan", 70_000),
            "wan_transformer/config.json": b'{"_class_name": "WanTransformer3DModel"}',
            "wan_transformer/diffusion_pytorch_model.safetensors": _bytes("wan-ar", action_size),
            "wan_distilled_model/model.pt": _bytes("wan-distilled", action_size),
        },
    )
    hub.add_repo(
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        {
            "README.md": b"# Wan2.2-TI2V-5B\n",
            "model_index.json": b'{"_class_name": "WanPipeline"}',
            "vae/config.json": b'{"z_dim": 48}',
            "vae/diffusion_pytorch_model.safetensors": _bytes("wan-vae", 30_000),
            "text_encoder/config.json": b'{"model_type": "umt5"}',
            "text_encoder/model-00001-of-00002.safetensors": _bytes("umt5-1", 40_000),
            "text_encoder/model-00002-of-00002.safetensors": _bytes("umt5-2", 30_000),
            "tokenizer/tokenizer_config.json": b"{}",
            "tokenizer/spiece.model": _bytes("spiece", 5_000),
            "scheduler/scheduler_config.json": b'{"shift": 5.0}',
            "transformer/config.json": b'{"_class_name": "WanTransformer3DModel"}',
            "transformer/diffusion_pytorch_model.safetensors": _bytes("wan-base", 90_000),
        },
    )
    hub.add_repo(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        {
            "config.json": b'{"model_type": "qwen2_5_vl"}',
            "model-00001-of-00002.safetensors": _bytes("qwen1", 60_000),
            "model-00002-of-00002.safetensors": _bytes("qwen2", 50_000),
            "tokenizer.json": b'{"version": "1.0"}',
        },
    )
    hub.add_repo(
        "google/byt5-small",
        {
            "config.json": b'{"model_type": "t5"}',
            "pytorch_model.bin": _bytes("byt5", 30_000),
            "tf_model.h5": _bytes("byt5-tf", 30_000),
            "flax_model.msgpack": _bytes("byt5-flax", 30_000),
            "special_tokens_map.json": b"{}",
        },
    )
    hub.add_repo(
        "black-forest-labs/FLUX.1-Redux-dev",
        {
            "flux1-redux-dev.safetensors": _bytes("redux", 25_000),
            "image_encoder/config.json": b'{"model_type": "siglip_vision_model"}',
            "image_encoder/model.safetensors": _bytes("siglip", 35_000),
            "feature_extractor/preprocessor_config.json": b'{"size": 384}',
        },
        gated=True,
        tokens={GOOD_TOKEN},
    )
    hub.add_modelscope_repo(
        "AI-ModelScope/Glyph-SDXL-v2",
        {
            "README.md": b"# Glyph-SDXL-v2\n",
            "assets/color_idx.json": b'{"white": 0}',
            "assets/multilingual_10-lang_idx.json": b'{"en-Arial": 0}',
            "checkpoints/byt5_model.pt": _bytes("glyph", 45_000),
            "checkpoints/unused.pt": _bytes("glyph-unused", 5_000),
        },
    )
