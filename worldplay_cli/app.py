"""The `worldplay` command: a Typer app assembled from the modules of `worldplay_cli.commands`.

Every command module exposes `register(app)`; they are found by listing the package, so adding a
command touches no shared file. Modules import heavy libraries (rq, textual, httpx) inside their
functions so `worldplay --help` stays fast; none of them imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from worldplay_cli.errors import EXIT_FAILURE, WorldplayError, debug_enabled, format_error


app = typer.Typer(
    name="worldplay",
    help="Run, queue and train HY-World 1.5 (WorldPlay) world models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_commands() -> None:
    from worldplay_cli import commands

    for module in sorted(info.name for info in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"worldplay_cli.commands.{module}").register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every failure into one line and an exit code."""
    from trajectories.errors import TrajectoryError

    # Typer handles its own usage errors (exit 2) and exits; our errors propagate to here.
    try:
        app(args=argv, prog_name="worldplay")
    except (WorldplayError, TrajectoryError) as exc:
        if debug_enabled():
            raise
        sys.stderr.write(format_error(exc.message, exc.hint) + "\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if debug_enabled():
            raise
        sys.stderr.write(
            format_error(f"internal error: {type(exc).__name__}: {exc}", "rerun with WORLDPLAY_DEBUG=1 for a traceback")
            + "\n"
        )
        sys.exit(EXIT_FAILURE)
