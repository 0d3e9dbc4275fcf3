"""`worldplay download VARIANT...`: plan, check access and space, fetch resumably, link the official layout."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.options import JsonOption, ModelDirOption
from worldplay_cli.output import emit, err_console

LINK_MODES = ("auto", "symlink", "hardlink")


def register(app: typer.Typer) -> None:
    app.command("download")(download)


def download(
    variants: list[str] = typer.Argument(
        ...,
        help=f"{', '.join(variants.names())}, sr (add-on) or all; several at once share their pieces",
        show_default=False,
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print the plan: pieces, sizes, what is present, space"),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        help="Hugging Face token (default: HF_TOKEN or `hf auth login`); never printed or stored",
        show_default=False,
    ),
    model_dir: ModelDirOption = None,
    local_dir: Optional[Path] = typer.Option(
        None, "--local-dir", help="Put real files here instead of links into the Hugging Face cache"
    ),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Hugging Face cache (default: HF_HUB_CACHE)"),
    skip: list[str] = typer.Option([], "--skip", help="Leave out a piece, e.g. --skip siglip (gated FLUX encoder)"),
    quota: Optional[str] = typer.Option(None, "--quota", help="Use at most this much disk, e.g. 60GB (for quotas)"),
    ignore_disk_space: bool = typer.Option(False, "--ignore-disk-space", help="Start even if space looks short"),
    repair: bool = typer.Option(False, "--repair", help="Hash-check present files and fetch corrupt ones again"),
    offline: bool = typer.Option(False, "--offline", help="No network: use the cache only (same as HF_HUB_OFFLINE=1)"),
    workers: int = typer.Option(8, "--workers", min=1, max=64, help="Files fetched in parallel"),
    link: str = typer.Option("auto", "--link", help="auto (symlink, else hardlink), symlink or hardlink"),
    as_json: JsonOption = False,
) -> None:
    """Download every weight a variant needs, resumably, and lay it out like the official script."""
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.download.execute import execute
    from worldplay_cli.download.hub import HubAccess, offline_mode, resolve_token
    from worldplay_cli.download.layout import make_target
    from worldplay_cli.download.modelscope import ModelScopeAccess
    from worldplay_cli.download.plan import build_plan
    from worldplay_cli.download.sizes import parse_size

    if link not in LINK_MODES:
        raise BadInput(f"unknown --link {link!r}", f"choose one of {', '.join(LINK_MODES)}")
    if local_dir is not None and model_dir is not None:
        raise BadInput("--local-dir and --model-dir both name the layout root", "pass only one of them")
    quota_bytes = parse_size(quota, "--quota") if quota else None
    settings = load_settings({"model_dir": model_dir})
    target = make_target(settings.model_dir, local_dir=local_dir, cache_dir=cache_dir, link_mode=link)
    offline = offline_mode(offline)
    hub = HubAccess.from_env(token=None if offline else resolve_token(token))
    modelscope = ModelScopeAccess.from_env()
    plan = build_plan(variants, target, hub, modelscope, skip=skip, offline=offline, quota=quota_bytes)
    if dry_run:
        emit(plan.summary(), as_json, lambda console: _render_plan(console, plan))
        return
    if not as_json:
        _render_plan(err_console, plan)
    with _RichReporter(enabled=not as_json) as reporter:
        outcome = execute(
            plan,
            target,
            hub,
            modelscope,
            workers=workers,
            reporter=reporter,
            ignore_disk_space=ignore_disk_space,
            repair=repair,
        )
    result = {**plan.summary(), **outcome.as_dict()}
    emit(result, as_json, lambda console: _render_done(console, plan, outcome, target, settings.model_dir))


def _render_plan(console: Console, plan) -> None:
    from worldplay_cli.download.sizes import format_size

    estimated = plan.sizes_from == "catalog"
    table = Table(title=f"{' + '.join(plan.variants)} → {plan.model_dir}" + (" (offline)" if plan.offline else ""))
    table.add_column("piece", no_wrap=True)
    table.add_column("source", overflow="fold")
    for column in ("files", "size", "present"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status")
    for item in plan.pieces:
        from_catalog = item.sizes_from == "catalog"
        if from_catalog and not plan.offline:
            status = "[red]unreachable[/red]"  # the error itself is printed once, below the table
        elif item.problem:
            status = f"[red]{item.problem}[/red]"
        elif item.complete:
            status = "[green]present[/green]"
        elif item.have:
            status = "[yellow]partial[/yellow]"
        else:
            status = "to download"
        source = f"{'modelscope:' if item.piece.source == 'modelscope' else ''}{item.piece.repo}"
        if item.piece.gated:
            source += " [dim](gated)[/dim]"
        # Unlisted pieces have no file names: their count is unknown and their size is the catalog's estimate.
        table.add_row(
            item.piece.name,
            source,
            "?" if from_catalog else str(len(item.files)),
            format_size(item.estimate if from_catalog else item.total, approximate=from_catalog),
            "?" if from_catalog else format_size(item.have),
            status,
        )
    console.print(table)
    if estimated:
        console.print(f"[yellow]{plan.sizes_note}[/yellow]", soft_wrap=True, highlight=False)
    console.print(
        f"total {format_size(plan.total, estimated)} · present {format_size(plan.have)} · "
        f"to download [bold]{format_size(plan.need, estimated)}[/bold] · "
        + ("links into " + plan.cache_dir if not plan.local else "real files (--local-dir)"),
        soft_wrap=True,
        highlight=False,
    )
    for check in plan.space:
        where = "quota (--quota)" if check.path == "--quota" else check.path
        verdict = "[green]ok[/green]" if check.ok else "[red]NOT ENOUGH SPACE[/red]"
        console.print(
            f"disk {where}: needs {format_size(check.need, estimated)}, free {format_size(check.free)} {verdict}",
            soft_wrap=True,
            highlight=False,
        )
    notes: dict[str, list[str]] = {}
    for item in plan.pieces:
        unreachable = item.sizes_from == "catalog" and not plan.offline
        note = f"{item.problem}; {item.hint}" if unreachable and item.hint else item.hint
        if note:
            notes.setdefault(note, []).append(item.piece.name)
    # Offline or unreachable, every piece has the same note: say it once.
    for note, names in notes.items():
        console.print(f"[yellow]{', '.join(names)}[/yellow]: {note}", soft_wrap=True, highlight=False)


def _render_done(console: Console, plan, outcome, target, default_model_dir: Path) -> None:
    from worldplay_cli.download.sizes import format_size

    links = ", ".join(f"{count} {how}" for how, count in sorted(outcome.links.items())) or "no new links"
    console.print(
        f"[green]ready[/green]: {' + '.join(plan.variants)} in {plan.model_dir} "
        f"(downloaded {format_size(outcome.downloaded_bytes)} in {outcome.downloaded_files} file(s); {links})",
        highlight=False,
    )
    if outcome.repaired_files:
        console.print(f"repaired {len(outcome.repaired_files)} corrupt file(s)")
    if target.model_dir != Path(default_model_dir).expanduser().absolute():
        console.print(
            f'[dim]set model_dir = "{target.model_dir}" in your config (or WORLDPLAY_MODEL_DIR) '
            "so `worldplay run` finds it[/dim]"
        )


class _RichReporter:
    """Overall and per-file progress bars on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._lock = threading.Lock()
        self._tasks: dict[str, int] = {}
        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not (enabled and err_console.is_terminal),
        )
        self._overall: int | None = None

    def __enter__(self) -> _RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def begin(self, total: int, have: int, files: int) -> None:
        self._overall = self._progress.add_task(f"[bold]all ({files} file(s) to fetch)", total=total, completed=have)

    def file_started(self, key: str, label: str, size: int, have: int) -> None:
        with self._lock:
            self._tasks[key] = self._progress.add_task(_short(label), total=size, completed=have)

    def file_bytes(self, key: str, count: int) -> None:
        self._progress.advance(self._tasks[key], count)
        if self._overall is not None:
            self._progress.advance(self._overall, count)

    def file_done(self, key: str) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)

    def note(self, message: str) -> None:
        self._progress.console.print(message)


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1) :]
