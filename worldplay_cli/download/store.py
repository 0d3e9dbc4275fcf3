"""Where downloaded bytes live: the Hugging Face cache layout, used for ModelScope too.

`<root>/blobs/<etag>` holds the content (etag = sha256 for LFS files, the git blob sha1 otherwise),
`<root>/snapshots/<commit>/<path>` points at it and `<root>/refs/<revision>` names the commit, exactly as
huggingface_hub lays out `models--org--name`, so transformers and `hf cache` see our downloads.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def hf_cache_dir(explicit: Path | None = None) -> Path:
    """The Hub cache, read from the environment at call time (huggingface_hub reads it at import)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


class BlobStore:
    """One repository's folder in a Hub-style cache."""

    def __init__(self, cache_dir: Path, repo: str):
        self.root = Path(cache_dir) / repo_folder(repo)

    def blob(self, etag: str) -> Path:
        return self.root / "blobs" / etag

    def partial(self, etag: str) -> Path:
        # A stable name (huggingface_hub uses `<etag>.<random>.incomplete`), so a later run resumes it.
        return self.root / "blobs" / f"{etag}.worldplay.incomplete"

    def pointer(self, commit: str, repo_path: str) -> Path:
        return self.root / "snapshots" / commit / repo_path

    def read_ref(self, revision: str) -> str | None:
        if _HEX.fullmatch(revision):
            return revision
        ref = self.root / "refs" / revision
        try:
            return ref.read_text().strip() or None
        except OSError:
            return None

    def write_ref(self, revision: str, commit: str) -> None:
        if revision == commit:
            return
        ref = self.root / "refs" / revision
        if self.read_ref(revision) == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)

    def link_pointer(self, commit: str, repo_path: str, etag: str) -> Path:
        """Point the snapshot entry at the blob (relative symlink; hardlink where symlinks are refused)."""
        pointer = self.pointer(commit, repo_path)
        blob = self.blob(etag)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() and pointer.resolve() == blob.resolve():
            return pointer
        if pointer.exists() and not pointer.is_symlink() and _same_inode(pointer, blob):
            return pointer
        if pointer.exists() or pointer.is_symlink():
            pointer.unlink()
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:
            os.link(blob, pointer)
        return pointer

    def snapshot_files(self, commit: str) -> dict[str, tuple[int, str | None]]:
        """repo path -> (size, etag) for what a snapshot holds on disk (etag from the blob name)."""
        folder = self.root / "snapshots" / commit
        found: dict[str, tuple[int, str | None]] = {}
        if not folder.is_dir():
            return found
        for path in sorted(folder.rglob("*")):
            if path.is_dir() or not path.exists():
                continue
            target = path.resolve()
            in_blobs = target.parent == (self.root / "blobs").resolve()
            etag = target.name if in_blobs and _HEX.fullmatch(target.name) else None
            found[path.relative_to(folder).as_posix()] = (target.stat().st_size, etag)
        return found


def _same_inode(left: Path, right: Path) -> bool:
    try:
        a, b = left.stat(), right.stat()
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def same_file(left: Path, right: Path) -> bool:
    return _same_inode(left, right)


def git_blob_sha1(path: Path, chunk_size: int = 8 << 20) -> str:
    """The git object id of a file: what the Hub reports as `blobId`/ETag for non-LFS files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path, chunk_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
