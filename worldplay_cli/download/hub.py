"""The Hugging Face side: listing a piece (sizes, digests, commit), access checks, fetching one file.

Listing and metadata go through huggingface_hub (`model_info(files_metadata=True)`, `get_hf_file_metadata`).
Xet-backed files are handed to `hf_hub_download` (it speaks Xet); plain HTTP files go through our
resumable transfer, which keeps partial files across runs (huggingface_hub discards them on failure).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download.catalog import Piece
from worldplay_cli.download.manifest import FileRecord
from worldplay_cli.download.transfer import fetch

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubAccess:
    """Where to ask and with which credentials. The token never appears in repr, logs or records."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, token: str | None = None) -> HubAccess:
        endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        return cls(endpoint=endpoint, token=token)


def resolve_token(explicit: str | None) -> str | None:
    """`--token`, else HF_TOKEN, else the cached `hf auth login` token."""
    if explicit:
        return explicit
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a broken login file must not stop public downloads
        return None


class Unreachable(WorldplayError):
    """No answer at all from a hub (no network, DNS, refused, timeout): a plan falls back to the catalog."""


def _hub_error(exc: Exception, piece: Piece, access: HubAccess) -> WorldplayError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return gated_error(piece, access)
    if isinstance(exc, RevisionNotFoundError):
        return WorldplayError(f"{piece.repo} has no revision {piece.revision!r}", f"see {piece.web_url}")
    if isinstance(exc, RepositoryNotFoundError):
        return WorldplayError(
            f"{piece.repo} was not found on {access.endpoint}", "check HF_ENDPOINT, or your token if it is private"
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return WorldplayError(f"the Hub answered {status} for {piece.repo}", "retry later; partial files are kept")
    return Unreachable(
        f"cannot reach {access.endpoint}: {type(exc).__name__}",
        "check your network, or set HF_HUB_OFFLINE=1 to use only what is cached",
    )


def gated_error(piece: Piece, access: HubAccess) -> WorldplayError:
    if access.token:
        hint = f"your token has no access yet: request it at {piece.web_url} and wait for approval"
    else:
        hint = (
            f"request access at {piece.web_url}, then pass --token, set HF_TOKEN or run `hf auth login`; "
            f"or skip it with --skip {piece.name}"
        )
    return WorldplayError(f"{piece.repo} is gated and this account cannot download it", hint)


@dataclass
class Listing:
    commit: str
    files: list[FileRecord]
    gated: bool


def list_piece(piece: Piece, access: HubAccess) -> Listing:
    """The piece's files at the current commit of its revision, with sizes and digests."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=access.endpoint, token=access.token or False)
    try:
        info = api.model_info(piece.repo, revision=piece.revision, files_metadata=True, timeout=access.timeout_s)
    except Exception as exc:
        raise _hub_error(exc, piece, access) from None
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or []}
    files = []
    for path in piece.wanted(siblings):
        sibling = siblings[path]
        lfs = sibling.lfs
        files.append(
            FileRecord(
                repo_path=path,
                layout_path=piece.layout_path(path),
                size=lfs.size if lfs else int(sibling.size or 0),
                sha256=lfs.sha256 if lfs else None,
                git_sha1=None if lfs else sibling.blob_id,
            )
        )
    if not files:
        raise WorldplayError(
            f"no files of {piece.repo} match {list(piece.allow_patterns or [])}", f"see {piece.web_url}"
        )
    return Listing(commit=info.sha, files=files, gated=bool(info.gated) or piece.gated)


def check_access(piece: Piece, commit: str, first: FileRecord, access: HubAccess) -> None:
    """Ask for one file's metadata, the request a gated repo refuses (401 without token, 403 without access)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(piece.repo, first.repo_path, revision=commit, endpoint=access.endpoint)
    try:
        get_hf_file_metadata(url, token=access.token or False, timeout=access.timeout_s)
    except Exception as exc:
        raise _hub_error(exc, piece, access) from None


def fetch_hub_file(
    piece: Piece,
    commit: str,
    record: FileRecord,
    access: HubAccess,
    dest: Path,
    partial: Path,
    on_bytes: Callable[[int], None] | None = None,
    *,
    cache_dir: Path | None = None,
    staging: Path | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Bring one file to `dest` (a cache blob, or a real layout file with `staging` for Xet), resuming `partial`."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(piece.repo, record.repo_path, revision=commit, endpoint=access.endpoint)
    try:
        metadata = get_hf_file_metadata(url, token=access.token or False, timeout=access.timeout_s)
    except Exception as exc:
        raise _hub_error(exc, piece, access) from None
    if getattr(metadata, "xet_file_data", None) is not None and _xet_available():
        _fetch_with_hf_hub_download(piece, commit, record, access, dest, cache_dir, staging)
        if on_bytes:
            on_bytes(record.size)
        return
    location = metadata.location or url
    # Credentials go to the Hub only, never to the CDN or mirror host a file is redirected to.
    same_origin = _origin(location) == _origin(access.endpoint)
    headers = build_hf_headers(token=(access.token or False) if same_origin else False)
    headers["Accept-Encoding"] = "identity"
    fetch(
        location,
        dest,
        partial,
        size=record.size,
        sha256=record.sha256,
        git_sha1=record.git_sha1,
        headers=headers,
        on_bytes=on_bytes,
        timeout_s=access.timeout_s,
        describe=f"{piece.repo}/{record.repo_path}",
        cancelled=cancelled,
    )


def _fetch_with_hf_hub_download(
    piece: Piece,
    commit: str,
    record: FileRecord,
    access: HubAccess,
    dest: Path,
    cache_dir: Path | None,
    staging: Path | None,
) -> None:
    from huggingface_hub import hf_hub_download

    try:
        if staging is None:  # cache mode: the library writes the blob and the snapshot pointer itself
            hf_hub_download(
                piece.repo,
                record.repo_path,
                revision=commit,
                cache_dir=str(cache_dir),
                endpoint=access.endpoint,
                token=access.token or False,
            )
            return
        staging.mkdir(parents=True, exist_ok=True)
        path = hf_hub_download(
            piece.repo,
            record.repo_path,
            revision=commit,
            local_dir=str(staging),
            endpoint=access.endpoint,
            token=access.token or False,
        )
    except Exception as exc:
        raise _hub_error(exc, piece, access) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    shutil.rmtree(staging, ignore_errors=True)


def _xet_available() -> bool:
    try:
        from huggingface_hub.utils import is_xet_available
    except ImportError:  # huggingface_hub before Xet support
        return False
    return is_xet_available() and os.environ.get("HF_HUB_DISABLE_XET", "").lower() not in ("1", "true", "yes", "on")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def offline_mode(flag: bool = False) -> bool:
    """`--offline` or HF_HUB_OFFLINE (read now: huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag or value.strip().lower() in ("1", "true", "yes", "on")
