"""What a model directory holds, checked against the manifest: list, path, verify, rm. No network."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download import catalog
from worldplay_cli.download.catalog import Variant
from worldplay_cli.download.execute import digest_matches
from worldplay_cli.download.manifest import FileRecord, Manifest, PieceRecord, load_manifest, save_manifest
from worldplay_cli.download.store import BlobStore

Status = Literal["ok", "missing", "wrong-size", "corrupt"]


class FileCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    piece: str
    layout_path: str
    status: Status
    size: int


def file_status(model_dir: Path, record: FileRecord, full: bool) -> Status:
    path = Path(model_dir) / record.layout_path
    if not path.exists():  # also a symlink whose blob is gone
        return "missing"
    if path.stat().st_size != record.size:
        return "wrong-size"
    if full and not digest_matches(path, record):
        return "corrupt"
    return "ok"


def variant_state(variant: Variant, manifest: Manifest, model_dir: Path) -> dict:
    if not variant.released:
        return {
            "name": variant.name,
            "title": variant.title,
            "status": "unreleased",
            "size_bytes": None,
            "missing_pieces": [],
            "note": variant.note,
        }
    recorded = [manifest.pieces[name] for name in variant.pieces if name in manifest.pieces]
    missing = [name for name in variant.pieces if name not in manifest.pieces]
    broken = [
        record.name
        for record in recorded
        if any(file_status(model_dir, file, full=False) != "ok" for file in record.files)
    ]
    if not recorded:
        status = "missing"
    elif missing or broken:
        status = "partial"
    else:
        status = "ready"
    return {
        "name": variant.name,
        "title": variant.title,
        "status": status,
        "size_bytes": sum(record.size for record in recorded) if recorded else None,
        "missing_pieces": missing + broken,
        "note": variant.note,
    }


def list_variants(model_dir: Path) -> list[dict]:
    manifest = load_manifest(model_dir)
    return [variant_state(variant, manifest, model_dir) for variant in catalog.VARIANTS.values()]


def variant_paths(variant_name: str, model_dir: Path) -> dict:
    """The two paths the official CLI takes: `--model_path` and `--action_ckpt`."""
    variant = catalog.find_variant(variant_name)
    state = variant_state(variant, load_manifest(model_dir), model_dir)
    if state["status"] == "missing":
        raise WorldplayError(
            f"{variant_name} is not downloaded in {model_dir}", f"run `worldplay download {variant_name}`"
        )
    if state["status"] != "ready":
        raise WorldplayError(
            f"{variant_name} is incomplete in {model_dir} (missing or damaged: {', '.join(state['missing_pieces'])})",
            f"run `worldplay download {variant_name}`",
        )
    return {
        "variant": variant_name,
        "model_path": str(model_dir),
        "action_ckpt": str(Path(model_dir) / variant.action_checkpoint) if variant.action_checkpoint else None,
    }


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[FileCheck]
    # Pieces of the named variants with no record (skipped, or never fetched).
    absent: list[str]
    # Named variants of which nothing is here; with no names, True `empty` says the same of the whole directory.
    not_downloaded: list[str]
    empty: bool
    # Of the variants checked (the named ones, else those whose own action model or SR stage is here):
    ready: list[str]
    incomplete: dict[str, list[str]]


def verify(model_dir: Path, names: list[str] | None, full: bool = True) -> Verification:
    """Check each recorded file (size, and sha256 / git blob id when `full`) and say what is not here at all."""
    manifest = load_manifest(model_dir)
    if names:
        variants, pieces = catalog.select(names)
        wanted = [piece.name for piece in pieces]
    else:
        variants = [variant for variant in catalog.VARIANTS.values() if _installed(variant, manifest)]
        wanted = list(manifest.pieces)
    checks = []
    for name in wanted:
        record = manifest.pieces.get(name)
        for file in record.files if record else []:
            checks.append(
                FileCheck(
                    piece=name, layout_path=file.layout_path, size=file.size, status=file_status(model_dir, file, full)
                )
            )
    states = {variant.name: variant_state(variant, manifest, model_dir) for variant in variants}
    not_downloaded = [name for name, state in states.items() if state["status"] == "missing"]
    # A variant that is not here at all is reported as such, not piece by piece.
    here = {piece for variant in variants if variant.name not in not_downloaded for piece in variant.pieces}
    return Verification(
        checks=checks,
        absent=[name for name in wanted if name not in manifest.pieces and (name in here or not names)],
        not_downloaded=not_downloaded,
        empty=not manifest.pieces,
        ready=[name for name, state in states.items() if state["status"] == "ready"],
        incomplete={name: state["missing_pieces"] for name, state in states.items() if state["status"] == "partial"},
    )


def repair_command(model_dir: Path, names: list[str] | None, broken_pieces: set[str], show_dir: bool) -> str:
    """The `worldplay download ... --repair` line that fetches exactly what verify found wrong."""
    manifest = load_manifest(model_dir)
    skip: list[str] = []
    if not names:
        chosen = [
            variant
            for variant in catalog.VARIANTS.values()
            if _installed(variant, manifest) and set(variant.pieces) & broken_pieces
        ]
        names = [variant.name for variant in chosen]
        # Pieces the user left out when downloading (e.g. the gated encoder) stay out.
        skip = sorted(
            {
                piece
                for variant in chosen
                for piece in variant.pieces
                if piece not in manifest.pieces and piece not in broken_pieces
            }
        )
    command = f"worldplay download {' '.join(names or ['VARIANT'])} --repair"
    command += "".join(f" --skip {piece}" for piece in skip)
    return command + (f" --model-dir {model_dir}" if show_dir else "")


def remove(model_dir: Path, names: list[str], purge_cache: bool) -> dict:
    """Remove the variants' pieces no other installed variant needs; blobs only with `purge_cache`."""
    manifest = load_manifest(model_dir)
    variants, pieces = catalog.select(names)
    removing = {variant.name for variant in variants}
    still_needed = {
        piece
        for variant in catalog.VARIANTS.values()
        if variant.name not in removing and _installed(variant, manifest)
        for piece in variant.pieces
    }
    removed_pieces, freed, kept_in_cache = [], 0, 0
    for piece in pieces:
        record = manifest.pieces.get(piece.name)
        if record is None or piece.name in still_needed:
            continue
        del manifest.pieces[piece.name]
        freed_here, cached = _remove_piece(Path(model_dir), record, manifest, purge_cache)
        freed += freed_here
        kept_in_cache += cached
        removed_pieces.append(piece.name)
    save_manifest(model_dir, manifest)
    return {
        "removed_pieces": removed_pieces,
        "kept_pieces": sorted(still_needed & {piece.name for piece in pieces}),
        "freed_bytes": freed,
        "still_in_cache_bytes": kept_in_cache,
    }


def _installed(variant: Variant, manifest: Manifest) -> bool:
    """A variant counts as installed when a piece only it uses (its action model, the SR stage) is recorded."""
    others = {piece for other in catalog.VARIANTS.values() if other.name != variant.name for piece in other.pieces}
    return any(piece in manifest.pieces for piece in variant.pieces if piece not in others)


def _remove_piece(model_dir: Path, record: PieceRecord, remaining: Manifest, purge_cache: bool) -> tuple[int, int]:
    freed = cached = 0
    etags_in_use = {file.etag for other in remaining.pieces.values() for file in other.files}
    store = BlobStore(Path(record.cache_dir), record.repo) if record.cache_dir else None
    for file in record.files:
        path = model_dir / file.layout_path
        if path.is_symlink() or path.exists():
            if not path.is_symlink() and path.stat().st_nlink == 1:  # the last name of real bytes
                freed += file.size
            path.unlink()
            _prune_empty_dirs(path.parent, model_dir)
        if store is None:
            continue
        blob = store.blob(file.etag)
        if not blob.exists():
            continue
        if purge_cache and file.etag not in etags_in_use:
            pointer = store.pointer(record.commit, file.repo_path)
            if pointer.is_symlink() or pointer.exists():
                pointer.unlink()
            freed += blob.stat().st_size
            blob.unlink()
        else:
            cached += file.size
    return freed, cached


def _prune_empty_dirs(folder: Path, stop: Path) -> None:
    folder, stop = folder.absolute(), stop.absolute()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
