"""The ModelScope side, through its public HTTP file API (no `modelscope` package needed).

Listing: `GET {endpoint}/api/v1/models/{repo}/repo/files?Revision=..&Recursive=true` returns
`{"Code": 200, "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256", "Revision"}]}}`.
File: `GET {endpoint}/api/v1/models/{repo}/repo?Revision=..&FilePath=..` (Range requests work), so the
same resumable, sha256-checked transfer as for the Hub applies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download.catalog import Piece
from worldplay_cli.download.hub import Listing, Unreachable
from worldplay_cli.download.manifest import FileRecord
from worldplay_cli.download.transfer import fetch

DEFAULT_ENDPOINT = "https://www.modelscope.cn"


@dataclass(frozen=True)
class ModelScopeAccess:
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls) -> ModelScopeAccess:
        endpoint = os.environ.get("MODELSCOPE_ENDPOINT")
        if not endpoint and os.environ.get("MODELSCOPE_DOMAIN"):  # the modelscope package's own variable
            endpoint = "https://" + os.environ["MODELSCOPE_DOMAIN"]
        return cls(endpoint=(endpoint or DEFAULT_ENDPOINT).rstrip("/"), token=os.environ.get("MODELSCOPE_API_TOKEN"))

    def headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", "User-Agent": "worldplay"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def list_piece(piece: Piece, access: ModelScopeAccess) -> Listing:
    import httpx

    url = f"{access.endpoint}/api/v1/models/{piece.repo}/repo/files?" + urlencode(
        {"Revision": piece.revision, "Recursive": "true"}
    )
    try:
        response = httpx.get(url, headers=access.headers(), timeout=access.timeout_s, follow_redirects=True)
    except httpx.TransportError as exc:
        raise Unreachable(
            f"cannot reach {access.endpoint}: {type(exc).__name__}",
            "check your network, or set HF_HUB_OFFLINE=1 to use only what is already downloaded",
        ) from None
    body = _json(response)
    if response.status_code != 200 or body.get("Code") not in (200, None) or not isinstance(body.get("Data"), dict):
        raise WorldplayError(
            f"ModelScope listing of {piece.repo}@{piece.revision} failed (HTTP {response.status_code})",
            f"see {piece.web_url}",
        )
    listed = body["Data"].get("Files") or []
    entries = {entry["Path"]: entry for entry in listed if entry.get("Type", "blob") == "blob"}
    files = [
        FileRecord(
            repo_path=path,
            layout_path=piece.layout_path(path),
            size=int(entries[path].get("Size") or 0),
            sha256=(entries[path].get("Sha256") or None),
        )
        for path in piece.wanted(entries)
    ]
    if not files:
        raise WorldplayError(
            f"no files of {piece.repo} match {list(piece.allow_patterns or [])}", f"see {piece.web_url}"
        )
    revisions = {entries[record.repo_path].get("Revision") for record in files} - {None, ""}
    commit = revisions.pop() if len(revisions) == 1 else piece.revision
    return Listing(commit=commit, files=files, gated=False)


def file_url(piece: Piece, commit: str, repo_path: str, access: ModelScopeAccess) -> str:
    query = urlencode({"Revision": commit, "FilePath": repo_path}, quote_via=quote)
    return f"{access.endpoint}/api/v1/models/{piece.repo}/repo?{query}"


def fetch_file(
    piece: Piece,
    commit: str,
    record: FileRecord,
    access: ModelScopeAccess,
    dest: Path,
    partial: Path,
    on_bytes: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    fetch(
        file_url(piece, commit, record.repo_path, access),
        dest,
        partial,
        size=record.size,
        sha256=record.sha256,
        headers=access.headers(),
        on_bytes=on_bytes,
        timeout_s=access.timeout_s,
        describe=f"modelscope:{piece.repo}/{record.repo_path}",
        cancelled=cancelled,
    )


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
