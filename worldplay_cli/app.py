"""The `worldplay` command: a Typer app assembled from command modules.

Every command module exposes `register(app)`. Modules import heavy libraries (rq, textual, httpx)
inside their functions so `worldplay --help` stays fast; none of them imports torch.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from worldplay_cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, WorldplayError, debug_enabled, format_error

COMMAND_MODULES = (
    "traj",
    "rewrite",
)

app = typer.Typer(
    name="worldplay",
    help="Run, queue and train HY-World 1.5 (WorldPlay) world models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"worldplay_cli.commands.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every failure into one line and an exit code."""
    from trajectories.errors import TrajectoryError

    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else exc.exit_code)
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
