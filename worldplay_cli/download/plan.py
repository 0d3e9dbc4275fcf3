"""Plan first: every file a selection needs, what is already here, and whether the disk can take the rest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download import catalog
from worldplay_cli.download.catalog import Piece
from worldplay_cli.download.hub import HubAccess, Listing, Unreachable
from worldplay_cli.download.layout import Target
from worldplay_cli.download.manifest import FileRecord, Manifest, load_manifest
from worldplay_cli.download.modelscope import ModelScopeAccess

PLAN_VERSION = 1

Where = Literal["cache", "layout", "partial", "missing"]
# hub: listed just now (Hugging Face or ModelScope); local: the manifest's or the cache's record of an earlier
# listing; catalog: worldplay's own estimate (`catalog.KNOWN_SIZES`), when neither of the others is possible.
SizesFrom = Literal["hub", "local", "catalog"]


class PlannedFile(FileRecord):
    where: Where = "missing"
    have: int = 0

    @property
    def present(self) -> bool:
        return self.where in ("cache", "layout")


class PlannedPiece(BaseModel):
    model_config = ConfigDict(extra="forbid")

    piece: Piece
    commit: str | None = None
    files: list[PlannedFile] = []
    sizes_from: SizesFrom = "hub"
    # Without a listing the file names are unknown, so only the catalog's total for the piece is.
    estimate: int | None = None
    problem: str | None = None
    hint: str | None = None

    @property
    def total(self) -> int:
        if self.sizes_from == "catalog":
            return self.estimate or 0
        return sum(file.size for file in self.files)

    @property
    def have(self) -> int:
        return sum(file.have for file in self.files)

    @property
    def complete(self) -> bool:
        return self.problem is None and all(file.present for file in self.files)


class SpaceCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    need: int
    free: int

    @property
    def ok(self) -> bool:
        return self.need <= self.free


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = PLAN_VERSION
    variants: list[str]
    model_dir: str
    cache_dir: str
    local: bool
    offline: bool
    pieces: list[PlannedPiece]
    space: list[SpaceCheck] = []

    @property
    def total(self) -> int:
        return sum(piece.total for piece in self.pieces)

    @property
    def have(self) -> int:
        return sum(piece.have for piece in self.pieces)

    @property
    def need(self) -> int:
        return self.total - self.have

    @property
    def space_ok(self) -> bool:
        return all(check.ok for check in self.space)

    @property
    def sizes_from(self) -> SizesFrom:
        """`catalog` as soon as one piece is estimated: then every total is an estimate too."""
        kinds = {item.sizes_from for item in self.pieces}
        return next((kind for kind in ("catalog", "hub") if kind in kinds), "local")

    @property
    def sizes_note(self) -> str | None:
        if self.sizes_from != "catalog":
            return None
        why = "offline" if self.offline else "the hub is unreachable"
        return f"sizes from worldplay's catalog ({why}); the hub may differ"

    def summary(self) -> dict:
        """The JSON view printed by `--dry-run --json` and after a download."""
        return {
            "version": self.version,
            "variants": self.variants,
            "model_dir": self.model_dir,
            "cache_dir": self.cache_dir,
            "mode": "local" if self.local else "links",
            "offline": self.offline,
            "sizes_from": self.sizes_from,
            "sizes_note": self.sizes_note,
            "total_bytes": self.total,
            "present_bytes": self.have,
            "download_bytes": self.need,
            "space": [dict(check.model_dump(), ok=check.ok) for check in self.space],
            "pieces": [
                {
                    "name": item.piece.name,
                    "source": item.piece.source,
                    "repo": item.piece.repo,
                    "revision": item.piece.revision,
                    "commit": item.commit,
                    "gated": item.piece.gated,
                    "target": item.piece.target or ".",
                    "sizes_from": item.sizes_from,
                    "total_bytes": item.total,
                    "present_bytes": item.have,
                    # Unknown (null), not 0, when the sizes come from the catalog.
                    "files": None if item.sizes_from == "catalog" else len(item.files),
                    "missing_files": None
                    if item.sizes_from == "catalog"
                    else sum(not file.present for file in item.files),
                    "problem": item.problem,
                    "hint": item.hint,
                }
                for item in self.pieces
            ],
        }


def build_plan(
    names: list[str],
    target: Target,
    hub: HubAccess,
    modelscope: ModelScopeAccess,
    *,
    skip: list[str] | None = None,
    offline: bool = False,
    quota: int | None = None,
) -> Plan:
    variants, pieces = catalog.select(names, skip)
    return plan_pieces(
        pieces, target, hub, modelscope, variants=[variant.name for variant in variants], offline=offline, quota=quota
    )


def plan_pieces(
    pieces: list[Piece],
    target: Target,
    hub: HubAccess,
    modelscope: ModelScopeAccess,
    *,
    variants: list[str] | None = None,
    offline: bool = False,
    quota: int | None = None,
) -> Plan:
    """The plan for explicit pieces (catalog ones, or any repository described as a `Piece`)."""
    manifest = load_manifest(target.model_dir)
    # One failed connection per endpoint is enough: the next pieces go straight to the catalog instead of
    # each waiting for its own timeout.
    unreachable: dict[str, Unreachable] = {}
    planned = [_plan_piece(piece, target, hub, modelscope, manifest, offline, unreachable) for piece in pieces]
    plan = Plan(
        variants=variants or [],
        model_dir=str(target.model_dir),
        cache_dir=str(target.cache_dir),
        local=target.local,
        offline=offline,
        pieces=planned,
    )
    plan.space = _space_checks(plan, target, quota)
    return plan


def _plan_piece(
    piece: Piece,
    target: Target,
    hub: HubAccess,
    modelscope: ModelScopeAccess,
    manifest: Manifest,
    offline: bool,
    unreachable: dict[str, Unreachable],
) -> PlannedPiece:
    from worldplay_cli.download import hub as hub_api
    from worldplay_cli.download import modelscope as modelscope_api

    endpoint = modelscope.endpoint if piece.source == "modelscope" else hub.endpoint
    if offline:
        listing = cached_listing(piece, target, manifest)
        if listing is None:
            return _from_catalog(
                piece, "not in the cache (offline mode)", "run the download once without HF_HUB_OFFLINE=1 / --offline"
            )
        sizes_from: SizesFrom = "local"
    elif endpoint in unreachable:
        return _from_catalog(piece, unreachable[endpoint].message, unreachable[endpoint].hint)
    else:
        try:
            if piece.source == "modelscope":
                listing = modelscope_api.list_piece(piece, modelscope)
            else:
                listing = hub_api.list_piece(piece, hub)
        except Unreachable as exc:
            unreachable[endpoint] = exc
            return _from_catalog(piece, exc.message, exc.hint)
        sizes_from = "hub"
    files = [_locate(piece, record, target) for record in listing.files]
    planned = PlannedPiece(piece=piece, commit=listing.commit, files=files, sizes_from=sizes_from)
    if listing.gated and not offline and not planned.complete:
        try:
            hub_api.check_access(piece, listing.commit, listing.files[0], hub)
        except WorldplayError as exc:
            planned.problem, planned.hint = exc.message, exc.hint
    return planned


def _from_catalog(piece: Piece, problem: str, hint: str | None) -> PlannedPiece:
    """A piece nothing could list: the catalog's size for the plan, and the reason it cannot be fetched now."""
    # Only the catalog's own pieces: a look-alike (another repo or patterns under the same name) is not known.
    known = catalog.KNOWN_SIZES.get(piece.name) if catalog.PIECES.get(piece.name) == piece else None
    return PlannedPiece(
        piece=piece, sizes_from="catalog", estimate=known.size if known else None, problem=problem, hint=hint
    )


def _locate(piece: Piece, record: FileRecord, target: Target) -> PlannedFile:
    planned = PlannedFile(**record.model_dump())
    layout = target.layout(record)
    dest, partial = target.destination(piece, record)
    if not target.local and _is_complete(dest, record.size):
        planned.where, planned.have = "cache", record.size
    elif _is_complete(layout, record.size) and not layout.is_symlink():
        # A real file already in the layout (--local-dir, or the official download script) is used as is.
        planned.where, planned.have = "layout", record.size
    elif partial.is_file():
        planned.where, planned.have = "partial", min(partial.stat().st_size, record.size)
    return planned


def _is_complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def cached_listing(piece: Piece, target: Target, manifest: Manifest) -> Listing | None:
    """What is known without the network: the manifest's record, else the cache's snapshot of the revision."""
    record = manifest.pieces.get(piece.name)
    if record is not None and record.revision == piece.revision and record.repo == piece.repo:
        files = [file.model_copy(update={"layout_path": piece.layout_path(file.repo_path)}) for file in record.files]
        return Listing(commit=record.commit, files=files, gated=piece.gated)
    store = target.store(piece)
    commit = store.read_ref(piece.revision)
    if commit is None:
        return None
    on_disk = store.snapshot_files(commit)
    files = []
    for path in piece.wanted(on_disk):
        size, etag = on_disk[path]
        files.append(
            FileRecord(
                repo_path=path,
                layout_path=piece.layout_path(path),
                size=size,
                sha256=etag if etag and len(etag) == 64 else None,
                git_sha1=etag if etag and len(etag) == 40 else None,
            )
        )
    return Listing(commit=commit, files=files, gated=piece.gated) if files else None


def _space_checks(plan: Plan, target: Target, quota: int | None) -> list[SpaceCheck]:
    need_by_device: dict[int, tuple[Path, int]] = {}
    for item in plan.pieces:
        need = item.total - item.have
        if not need:
            continue
        root = _existing_ancestor(target.storage_root(item.piece))
        device = root.stat().st_dev
        path, total = need_by_device.get(device, (root, 0))
        need_by_device[device] = (path, total + need)
    checks = [
        SpaceCheck(path=str(path), need=need, free=shutil.disk_usage(path).free)
        for path, need in need_by_device.values()
    ]
    if quota is not None:
        checks.append(SpaceCheck(path="--quota", need=plan.need, free=quota))
    return checks


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
