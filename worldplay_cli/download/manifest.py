"""The record of what `worldplay download` placed in a model directory (never holds a token).

It lets `models verify/list/path/rm` and offline runs work without asking the Hub: every file's layout
path, size, digests and the blob it is linked to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download.catalog import Source

MANIFEST_VERSION = 1


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_path: str
    layout_path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    @property
    def etag(self) -> str:
        """The blob name the Hub cache uses: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 or self.git_sha1 or ""


class PieceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: Source
    repo: str
    revision: str
    commit: str
    storage: Literal["cache", "local"]
    cache_dir: str | None = None
    files: list[FileRecord]

    @property
    def size(self) -> int:
        return sum(record.size for record in self.files)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = MANIFEST_VERSION
    pieces: dict[str, PieceRecord] = {}


def manifest_path(model_dir: Path) -> Path:
    return Path(model_dir) / ".worldplay" / "manifest.json"


def load_manifest(model_dir: Path) -> Manifest:
    path = manifest_path(model_dir)
    if not path.exists():
        return Manifest()
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise WorldplayError(
            f"cannot read {path}: {type(exc).__name__}",
            "delete it and run `worldplay download` again (files already present are kept)",
        ) from None


def save_manifest(model_dir: Path, manifest: Manifest) -> None:
    path = manifest_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".manifest.{os.getpid()}.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)
