"""One resumable, verified HTTP download: `<partial>` grows with Range requests until it is complete,
its digest is checked against the one the Hub or ModelScope recorded, then it is renamed into place.

The partial file has a stable name, so a download that was interrupted (dropped connection, Ctrl-C,
reboot) continues where it stopped on the next run instead of starting over.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from worldplay_cli.contract.errors import WorldplayError

CHUNK_SIZE = 8 << 20
MAX_STALLED_ATTEMPTS = 5
RETRY_BASE_DELAY_S = 0.5
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class AccessDenied(WorldplayError):
    """The server refused the file itself (401/403), e.g. a gated repository."""


class Cancelled(WorldplayError):
    """The user interrupted; the partial file is kept for the next run."""


class _Digest:
    """sha256 for LFS/ModelScope files, the git blob sha1 for small Hub files (their only recorded digest)."""

    def __init__(self, size: int, sha256: str | None, git_sha1: str | None):
        self.size = size
        self.expected = sha256 or git_sha1
        self.kind = "sha256" if sha256 else "git-sha1" if git_sha1 else None
        self.reset()

    def reset(self) -> None:
        if self.kind == "sha256":
            self._hash = hashlib.sha256()
        elif self.kind == "git-sha1":
            self._hash = hashlib.sha1(f"blob {self.size}\0".encode())
        else:
            self._hash = None

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)

    def matches(self) -> bool:
        return self._hash is None or self._hash.hexdigest() == self.expected


def fetch(
    url: str,
    dest: Path,
    partial: Path,
    *,
    size: int,
    sha256: str | None = None,
    git_sha1: str | None = None,
    headers: dict[str, str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    timeout_s: float = 30.0,
    describe: str = "",
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Download `url` into `dest` through `partial`, resuming what `partial` already holds.

    `cancelled` is polled between chunks so an interrupt stops every worker promptly. A lock next to
    the partial file keeps two processes fetching the same blob from writing into it at once.
    """
    from filelock import FileLock

    partial.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(partial) + ".lock"):
        if dest.is_file() and dest.stat().st_size == size:
            return  # another process finished it while we waited
        _fetch_locked(
            url,
            dest,
            partial,
            size=size,
            sha256=sha256,
            git_sha1=git_sha1,
            headers=headers,
            on_bytes=on_bytes,
            timeout_s=timeout_s,
            describe=describe or dest.name,
            cancelled=cancelled,
        )
    Path(str(partial) + ".lock").unlink(missing_ok=True)


def _fetch_locked(
    url: str,
    dest: Path,
    partial: Path,
    *,
    size: int,
    sha256: str | None,
    git_sha1: str | None,
    headers: dict[str, str] | None,
    on_bytes: Callable[[int], None] | None,
    timeout_s: float,
    describe: str,
    cancelled: Callable[[], bool] | None,
) -> None:
    import httpx

    digest = _Digest(size, sha256, git_sha1)
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        have = 0
    _hash_prefix(partial, have, digest)
    stalled = 0
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout_s)) as client:
        while have < size or not partial.exists():
            request_headers = dict(headers or {})
            if have:
                request_headers["Range"] = f"bytes={have}-"
            start = have
            try:
                with client.stream("GET", url, headers=request_headers) as response:
                    if response.status_code in _RETRY_STATUS:
                        raise _Retry(f"HTTP {response.status_code}")
                    _raise_for_status(response, describe)
                    if have and response.status_code != 206:
                        have = 0  # the server ignored the Range header: start again from byte 0
                        digest.reset()
                    with open(partial, "r+b" if partial.exists() else "wb") as out:
                        out.seek(have)
                        out.truncate()
                        for chunk in response.iter_bytes():  # as received: a cut loses nothing
                            out.write(chunk)
                            digest.update(chunk)
                            have += len(chunk)
                            if on_bytes:
                                on_bytes(len(chunk))
                            if have > size:
                                break
                            if cancelled is not None and cancelled():
                                raise Cancelled(
                                    f"{describe}: interrupted at {have} of {size} bytes",
                                    "run the same command again: it resumes from the partial file",
                                )
                if have > size:
                    partial.unlink(missing_ok=True)
                    raise WorldplayError(
                        f"{describe}: the server sent more than the expected {size} bytes",
                        "the file changed upstream; run the download again",
                    )
            except (httpx.TransportError, _Retry) as exc:
                stalled = 0 if have > start else stalled + 1
                if stalled >= MAX_STALLED_ATTEMPTS:
                    raise WorldplayError(
                        f"{describe}: download keeps failing ({type(exc).__name__}) at {have} of {size} bytes",
                        "run the same command again later: it resumes from the partial file",
                    ) from None
                if stalled > 1:  # the first retry after a cut is immediate, then back off
                    time.sleep(min(RETRY_BASE_DELAY_S * 2 ** (stalled - 2), 8.0))
    if not digest.matches():
        partial.unlink(missing_ok=True)
        raise WorldplayError(
            f"{describe}: {digest.kind} mismatch after download; the corrupt copy was removed",
            "run the download again",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)


class _Retry(Exception):
    pass


def _raise_for_status(response, describe: str) -> None:
    if response.status_code < 400:
        return
    code = response.headers.get("X-Error-Code", "")
    if response.status_code in (401, 403):
        raise AccessDenied(f"{describe}: access denied (HTTP {response.status_code}{' ' + code if code else ''})")
    raise WorldplayError(
        f"{describe}: HTTP {response.status_code} {code}".rstrip(), "check the repository and revision"
    )


def _hash_prefix(partial: Path, have: int, digest: _Digest) -> None:
    if not have or digest.kind is None:
        return
    with open(partial, "rb") as handle:
        left = have
        while left:
            chunk = handle.read(min(CHUNK_SIZE, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
