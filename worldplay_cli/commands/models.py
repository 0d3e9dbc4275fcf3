"""`worldplay models list|path|verify|rm`: what the model directory holds, without the network."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.options import JsonOption, ModelDirOption
from worldplay_cli.output import emit

models_app = typer.Typer(help="Inspect, verify and remove downloaded weights.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _model_dir(model_dir: Optional[Path]) -> Path:
    from worldplay_cli.contract.settings import load_settings

    return load_settings({"model_dir": model_dir}).model_dir.expanduser().absolute()


@models_app.command("list")
def list_models(model_dir: ModelDirOption = None, as_json: JsonOption = False) -> None:
    """Variants with their state (ready, partial, missing, unreleased) and size on disk."""
    from worldplay_cli.download.inventory import list_variants

    root = _model_dir(model_dir)
    rows = list_variants(root)
    emit({"model_dir": str(root), "variants": rows}, as_json, lambda console: _render_list(console, root, rows))


def _render_list(console: Console, root: Path, rows: list[dict]) -> None:
    from worldplay_cli.download.sizes import format_size

    colours = {"ready": "green", "partial": "yellow", "missing": "red", "unreleased": "dim"}
    table = Table(title=str(root))
    for column in ("variant", "model", "status", "size", "missing pieces"):
        table.add_column(column)
    for row in rows:
        colour = colours[row["status"]]
        table.add_row(
            row["name"],
            row["title"],
            f"[{colour}]{row['status']}[/{colour}]",
            format_size(row["size_bytes"]) if row["size_bytes"] else "-",
            ", ".join(row["missing_pieces"]) or row["note"] if row["status"] != "ready" else "",
        )
    console.print(table)


@models_app.command("path")
def path(
    variant: str = typer.Argument(..., help=" or ".join((", ".join(variants.names()[:-1]), variants.names()[-1]))),
    model_dir: ModelDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the official `--model_path` and `--action_ckpt` of a downloaded variant."""
    from worldplay_cli.download.inventory import variant_paths

    paths = variant_paths(variant, _model_dir(model_dir))
    line = f"--model_path {paths['model_path']}"
    if paths["action_ckpt"]:
        line += f" --action_ckpt {paths['action_ckpt']}"
    emit(paths, as_json, lambda console: console.print(line, soft_wrap=True, highlight=False))


@models_app.command("verify")
def verify(
    variants: Optional[list[str]] = typer.Argument(None, help="Variants to check (default: everything recorded)"),
    quick: bool = typer.Option(False, "--quick", help="Sizes only; skip hashing"),
    model_dir: ModelDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every file against the size and sha256 (git blob id for small files) the Hub recorded."""
    from worldplay_cli.download.catalog import released_names
    from worldplay_cli.download.inventory import repair_command
    from worldplay_cli.download.inventory import verify as verify_files

    root = _model_dir(model_dir)
    found = verify_files(root, variants or None, full=not quick)
    bad = [check for check in found.checks if check.status != "ok"]
    broken_pieces = {check.piece for check in bad} | set(found.absent)
    repair = None
    if broken_pieces:
        # What is not downloaded at all needs a download (the error below), not a repair.
        present = [name for name in variants or [] if name not in found.not_downloaded]
        repair = repair_command(root, present or None, broken_pieces, show_dir=model_dir is not None)
    dir_option = f" --model-dir {root}" if model_dir is not None else ""
    result = {
        "model_dir": str(root),
        "checked_files": len(found.checks),
        # Nothing checked is not a pass: an empty directory, or a named variant that is not here, fails.
        "ok": not broken_pieces and not found.not_downloaded and not found.empty,
        "not_downloaded": found.not_downloaded,
        "problems": [check.model_dump() for check in bad],
        "absent_pieces": found.absent,
        "ready": found.ready,
        "incomplete": found.incomplete,
        "repair": repair,
    }
    emit(result, as_json, lambda console: _render_verify(console, result, quick))
    if found.not_downloaded:
        names = found.not_downloaded
        raise WorldplayError(
            f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not downloaded in {root}",
            f"run `worldplay download {' '.join(names)}{dir_option}`",
        )
    if found.empty:
        raise WorldplayError(
            f"nothing is downloaded in {root}",
            f"run `worldplay download VARIANT{dir_option}`, VARIANT one of {', '.join(released_names())}",
        )
    if broken_pieces:
        raise WorldplayError(f"{len(bad)} file(s) and {len(found.absent)} piece(s) need repair", repair)


def _render_verify(console: Console, result: dict, quick: bool) -> None:
    for problem in result["problems"]:
        console.print(f"[red]{problem['status']}[/red] {problem['layout_path']} ({problem['piece']})", highlight=False)
    for piece in result["absent_pieces"]:
        console.print(f"[red]absent[/red] piece {piece}")
    if result["ok"]:
        console.print(
            f"[green]ok[/green]: {result['checked_files']} file(s) match the recorded "
            + ("sizes" if quick else "sizes and hashes")
        )
        for name, missing in result["incomplete"].items():
            console.print(
                f"[yellow]incomplete[/yellow] {name}: no {', '.join(missing)} (`worldplay download {name}` fetches it)",
                highlight=False,
            )
        if not result["ready"] and not result["incomplete"]:
            console.print(
                "[yellow]no variant is complete here[/yellow] (`worldplay models list` shows what each one lacks)",
                highlight=False,
            )


@models_app.command("rm")
def rm(
    variants: list[str] = typer.Argument(..., help="Variants to remove; pieces other variants use are kept"),
    purge_cache: bool = typer.Option(False, "--purge-cache", help="Also delete the blobs from the Hugging Face cache"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    model_dir: ModelDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove downloaded variants from the model directory (and, with --purge-cache, their cached blobs)."""
    from worldplay_cli.download.catalog import select
    from worldplay_cli.download.inventory import remove
    from worldplay_cli.download.sizes import format_size

    select(variants)  # a mistyped name is bad input before any question is asked
    root = _model_dir(model_dir)
    if not yes and not typer.confirm(f"remove {' '.join(variants)} from {root}?"):
        raise typer.Abort()
    result = remove(root, variants, purge_cache)
    emit(
        {"model_dir": str(root), **result},
        as_json,
        lambda console: console.print(
            f"removed {', '.join(result['removed_pieces']) or 'nothing'}; freed {format_size(result['freed_bytes'])}"
            + (f"; kept (used by other variants): {', '.join(result['kept_pieces'])}" if result["kept_pieces"] else "")
            + (
                f"; {format_size(result['still_in_cache_bytes'])} remain in the cache (--purge-cache deletes them)"
                if result["still_in_cache_bytes"]
                else ""
            ),
            highlight=False,
        ),
    )
