"""Carry out a plan: fetch what is missing (in parallel, resumable), link the layout, record the manifest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Protocol

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.download import hub as hub_api
from worldplay_cli.download import modelscope as modelscope_api
from worldplay_cli.download.hub import HubAccess
from worldplay_cli.download.layout import Target, link
from worldplay_cli.download.manifest import FileRecord, PieceRecord, load_manifest, save_manifest
from worldplay_cli.download.modelscope import ModelScopeAccess
from worldplay_cli.download.plan import Plan, PlannedFile, PlannedPiece
from worldplay_cli.download.sizes import format_size
from worldplay_cli.download.store import file_sha256, git_blob_sha1
from worldplay_cli.download.transfer import AccessDenied


class Reporter(Protocol):
    """What a progress display receives; every method may be called from worker threads."""

    def begin(self, total: int, have: int, files: int) -> None: ...
    def file_started(self, key: str, label: str, size: int, have: int) -> None: ...
    def file_bytes(self, key: str, count: int) -> None: ...
    def file_done(self, key: str) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def begin(self, total: int, have: int, files: int) -> None: ...
    def file_started(self, key: str, label: str, size: int, have: int) -> None: ...
    def file_bytes(self, key: str, count: int) -> None: ...
    def file_done(self, key: str) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass
class Outcome:
    downloaded_bytes: int = 0
    downloaded_files: int = 0
    repaired_files: list[str] = field(default_factory=list)
    links: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "downloaded_bytes": self.downloaded_bytes,
            "downloaded_files": self.downloaded_files,
            "repaired_files": self.repaired_files,
            "links": self.links,
        }


def ensure_startable(plan: Plan, ignore_disk_space: bool = False) -> None:
    """Refuse before any byte moves: inaccessible pieces, or not enough space."""
    for item in plan.pieces:
        if item.problem is not None:
            raise WorldplayError(f"{item.piece.name}: {item.problem}", item.hint)
    if not plan.space_ok and not ignore_disk_space:
        short = next(check for check in plan.space if not check.ok)
        where = "your --quota" if short.path == "--quota" else short.path
        raise WorldplayError(
            f"not enough disk space: {format_size(short.need)} needed, {format_size(short.free)} free at {where}",
            "free some space, point HF_HUB_CACHE / --model-dir elsewhere, or pass --ignore-disk-space",
        )


def recheck_present(plan: Plan, target: Target, reporter: Reporter) -> list[str]:
    """--repair: hash every present file; corrupt ones are deleted so they are fetched again."""
    repaired = []
    for item in plan.pieces:
        for file in item.files:
            if not file.present:
                continue
            path = target.destination(item.piece, file)[0] if file.where == "cache" else target.layout(file)
            if digest_matches(path, file):
                continue
            reporter.note(f"corrupt: {file.layout_path} (removed, fetching again)")
            path.unlink()
            file.where, file.have = "missing", 0
            repaired.append(file.layout_path)
    return repaired


def digest_matches(path, record: FileRecord) -> bool:
    if record.sha256:
        return file_sha256(path) == record.sha256
    if record.git_sha1:
        return git_blob_sha1(path) == record.git_sha1
    return path.stat().st_size == record.size


def execute(
    plan: Plan,
    target: Target,
    hub: HubAccess,
    modelscope: ModelScopeAccess,
    *,
    workers: int = 8,
    reporter: Reporter | None = None,
    ignore_disk_space: bool = False,
    repair: bool = False,
) -> Outcome:
    reporter = reporter or SilentReporter()
    outcome = Outcome()
    if repair:
        outcome.repaired_files = recheck_present(plan, target, reporter)
    ensure_startable(plan, ignore_disk_space)
    todo = [(item, file) for item in plan.pieces for file in item.files if not file.present]
    todo.sort(key=lambda pair: pair[1].size - pair[1].have, reverse=True)
    reporter.begin(plan.total, plan.have, len(todo))
    failures: list[WorldplayError] = []
    if todo and plan.offline:
        missing = ", ".join(file.layout_path for _, file in todo[:3])
        raise WorldplayError(
            f"offline mode: {len(todo)} file(s) are not in the cache ({missing}{', ...' if len(todo) > 3 else ''})",
            "run the download again without HF_HUB_OFFLINE=1 / --offline",
        )
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="worldplay-download")
    try:
        futures = {
            pool.submit(_fetch_one, item, file, target, hub, modelscope, reporter, stop.is_set): file
            for item, file in todo
        }
        for future in as_completed(futures):
            file = futures[future]
            try:
                future.result()
            except WorldplayError as exc:
                failures.append(exc)
                continue
            outcome.downloaded_files += 1
            outcome.downloaded_bytes += file.size - file.have
            file.where, file.have = ("layout" if target.local else "cache"), file.size
    except BaseException:
        # Ctrl-C: stop every transfer at its next chunk; partial files stay for the next run.
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    manifest = load_manifest(target.model_dir)
    for item in plan.pieces:
        if not item.complete:
            continue
        _finish_piece(item, target, outcome)
        manifest.pieces[item.piece.name] = PieceRecord(
            name=item.piece.name,
            source=item.piece.source,
            repo=item.piece.repo,
            revision=item.piece.revision,
            commit=item.commit or item.piece.revision,
            storage="local" if target.local else "cache",
            cache_dir=None if target.local else str(target.store(item.piece).root.parent),
            files=[FileRecord(**file.model_dump(include=set(FileRecord.model_fields))) for file in item.files],
        )
    save_manifest(target.model_dir, manifest)
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more file(s))" if len(failures) > 1 else ""
        raise WorldplayError(first.message + more, first.hint)
    return outcome


def _fetch_one(
    item: PlannedPiece,
    file: PlannedFile,
    target: Target,
    hub: HubAccess,
    modelscope: ModelScopeAccess,
    reporter: Reporter,
    cancelled: Callable[[], bool],
) -> None:
    key = f"{item.piece.name}:{file.repo_path}"
    reporter.file_started(key, file.layout_path, file.size, file.have)
    dest, partial = target.destination(item.piece, file)

    def on_bytes(count: int) -> None:
        reporter.file_bytes(key, count)

    try:
        if item.piece.source == "modelscope":
            modelscope_api.fetch_file(item.piece, item.commit, file, modelscope, dest, partial, on_bytes, cancelled)
        else:
            hub_api.fetch_hub_file(
                item.piece,
                item.commit,
                file,
                hub,
                dest,
                partial,
                on_bytes,
                cache_dir=None if target.local else target.cache_dir,
                staging=target.model_dir / ".worldplay" / "staging" / item.piece.name if target.local else None,
                cancelled=cancelled,
            )
    except AccessDenied:
        raise hub_api.gated_error(item.piece, hub) from None
    finally:
        reporter.file_done(key)


def _finish_piece(item: PlannedPiece, target: Target, outcome: Outcome) -> None:
    """Snapshot pointers in the cache (so other tools find the files) and links in the layout."""
    if target.local:
        return
    store = target.store(item.piece)
    store.write_ref(item.piece.revision, item.commit)
    for file in item.files:
        if file.where != "cache":
            continue
        store.link_pointer(item.commit, file.repo_path, file.etag)
        how = link(store.blob(file.etag), target.layout(file), target.link_mode)
        outcome.links[how] = outcome.links.get(how, 0) + 1
