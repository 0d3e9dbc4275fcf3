"""Where things go: the official directory, built from cached blobs by links, never by copies."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from worldplay_cli.contract.errors import BadInput, WorldplayError
from worldplay_cli.download.catalog import Piece
from worldplay_cli.download.manifest import FileRecord
from worldplay_cli.download.store import BlobStore, same_file

LinkMode = Literal["auto", "symlink", "hardlink"]
LOCAL_PARTIAL_SUFFIX = ".incomplete"


@dataclass(frozen=True)
class Target:
    """The model directory and the caches that feed it. `local`: real files in the model directory."""

    model_dir: Path
    cache_dir: Path
    modelscope_cache: Path
    local: bool = False
    link_mode: LinkMode = "auto"

    def store(self, piece: Piece) -> BlobStore:
        return BlobStore(self.modelscope_cache if piece.source == "modelscope" else self.cache_dir, piece.repo)

    def layout(self, record: FileRecord) -> Path:
        return self.model_dir / record.layout_path

    def destination(self, piece: Piece, record: FileRecord) -> tuple[Path, Path]:
        """(final path, partial path) of the bytes: a cache blob, or the layout file itself with --local-dir."""
        if self.local:
            dest = self.layout(record)
            return dest, dest.with_name(dest.name + LOCAL_PARTIAL_SUFFIX)
        store = self.store(piece)
        return store.blob(record.etag), store.partial(record.etag)

    def storage_root(self, piece: Piece) -> Path:
        return self.model_dir if self.local else self.store(piece).root


def default_modelscope_cache(model_dir: Path) -> Path:
    """`MODELSCOPE_CACHE` (the modelscope package's variable) or a folder next to the model directory."""
    if os.environ.get("MODELSCOPE_CACHE"):
        return Path(os.environ["MODELSCOPE_CACHE"]).expanduser() / "worldplay"
    return Path(model_dir).parent / ".modelscope-cache"


def link(source: Path, dest: Path, mode: LinkMode = "auto") -> str:
    """Make `dest` name the same bytes as `source`; returns how ('kept', 'symlink' or 'hardlink')."""
    source = source.resolve()
    if dest.is_symlink() and dest.resolve() == source and mode != "hardlink":
        return "kept"
    if not dest.is_symlink() and dest.exists() and same_file(dest, source) and mode != "symlink":
        return "kept"
    if dest.is_dir() and not dest.is_symlink():
        raise BadInput(f"{dest} is a directory where a file belongs", "move it away and run the command again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if mode in ("auto", "symlink"):
        try:
            os.symlink(source, dest)
            return "symlink"
        except OSError:
            if mode == "symlink":
                raise WorldplayError(
                    f"cannot create a symlink at {dest}", "use --link hardlink or --local-dir"
                ) from None
    try:
        os.link(source, dest)
        return "hardlink"
    except OSError as exc:
        raise WorldplayError(
            f"cannot link {dest} to the cached file ({exc.strerror})",
            "put the model directory on the same filesystem as the cache (HF_HUB_CACHE), or use --local-dir",
        ) from None


def make_target(
    model_dir: Path, *, local_dir: Path | None = None, cache_dir: Path | None = None, link_mode: LinkMode = "auto"
) -> Target:
    """`--local-dir` makes that directory the model directory, holding real files instead of links."""
    from worldplay_cli.download.store import hf_cache_dir

    root = Path(local_dir or model_dir).expanduser().absolute()
    return Target(
        model_dir=root,
        cache_dir=hf_cache_dir(cache_dir).absolute(),
        modelscope_cache=default_modelscope_cache(root).absolute(),
        local=local_dir is not None,
        link_mode=link_mode,
    )
