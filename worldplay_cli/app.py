"""The `worldplay` command: a Typer app assembled from the modules of `worldplay_cli.commands`.

Every command module exposes `register(app)`; they are found by listing the package, so adding a
command touches no shared file. A module is named after the command it adds (`jobs`), or after the
command it extends (`traj_edit` adds `traj edit`): a command line that names a command imports its
modules alone. Modules import heavy libraries (rq, textual, httpx) inside their
functions so `worldplay --help` stays fast; none of them imports torch.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import sys
from typing import Annotated

import typer

from worldplay_cli import __version__
from worldplay_cli.contract.errors import EXIT_BAD_INPUT, EXIT_FAILURE, WorldplayError, debug_enabled, format_error

app = typer.Typer(
    name="worldplay",
    help="Run, queue and train HY-World 1.5 (WorldPlay) world models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"worldplay {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run, queue and train HY-World 1.5 (WorldPlay) world models."""


_registered: set[str] = set()


def _register_commands(args: list[str]) -> None:
    """Register the modules of the command `args` names (every module when it names none we know)."""
    from worldplay_cli import commands

    modules = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    named = args[0].replace("-", "_") if args else ""
    if named in modules:
        modules = [module for module in modules if module == named or module.startswith(named + "_")]
    for module in modules:
        if module not in _registered:
            importlib.import_module(f"worldplay_cli.commands.{module}").register(app)
            _registered.add(module)
    # Help lists commands in registration order: the same whichever command a process ran first.
    app.registered_commands.sort(key=lambda info: info.name or "")
    app.registered_groups.sort(key=lambda info: info.name or info.typer_instance.info.name or "")


# What an option's value is, in help: Typer prints the Python annotation (`<bool>`, `<list[str]>`), which
# says nothing to a user; flags get no word at all.
_VALUE_WORDS = {int: "INTEGER", float: "NUMBER"}


def _plain_metavars(command) -> None:
    # The --help option is made on first use and then kept; make it now so it gets no word either.
    help_option = command.get_help_option(command.context_class(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if param.metavar is not None or getattr(param, "param_type_name", "") != "option":
            continue
        if param.is_flag:
            param.metavar = ""
            continue
        descriptor = getattr(param, "type_descriptor", None)
        annotation = getattr(descriptor, "annotation", None)
        param.metavar = "PATH" if getattr(descriptor, "is_path", False) else _VALUE_WORDS.get(annotation, "TEXT")
    for subcommand in getattr(command, "commands", {}).values():
        _plain_metavars(subcommand)


def _named_command(command, args: list[str]):
    """The deepest command the arguments name and its path: `worldplay jobs show` for `jobs show x --bad`."""
    path = ["worldplay"]
    for arg in args:
        subcommand = getattr(command, "commands", {}).get(arg)
        if subcommand is None:
            break
        path.append(arg)
        command = subcommand
    return " ".join(path), command


def _usage_error(exc: typer.TyperException, command, args: list[str]) -> int:
    """A mistake on the command line (unknown option, bad value): one line naming what to read."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
        exc.show()
        return exc.exit_code
    context = getattr(exc, "ctx", None)
    path, command = (context.command_path, context.command) if context is not None else _named_command(command, args)
    message = " ".join(exc.format_message().split()).rstrip(".")
    hint = _old_flag_value_hint(command, args, message) or f"see `{path} --help`"
    sys.stderr.write(format_error(message[:1].lower() + message[1:], hint) + "\n")
    return exc.exit_code or EXIT_BAD_INPUT


def _old_flag_value_hint(command, args: list[str], message: str) -> str | None:
    """`--queue fast` or `--rewrite=required` (a value for a flag that once took one): its new spelling."""
    from worldplay_cli.options import OLD_FLAG_VALUES

    flags = {name for param in command.params if getattr(param, "is_flag", False) for name in param.opts}
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        # Only when the error is about it: "extra argument(s) (fast)" or "'--queue' does not take a value".
        if flag in flags and flag in OLD_FLAG_VALUES and value and not value.startswith("-"):
            if (flag if equals else value) in message:
                return f"{flag} is a plain flag now: use {OLD_FLAG_VALUES[flag](value)}"
    return None


def _app_for(args: list[str], typer_app: typer.Typer = app) -> typer.Typer:
    """The app with just the command `args` names (in a group, just the group's command it names), or the
    whole app or group (help, --version, a mistyped name). Typer builds every registered command's options
    from its signature on each run, most of the time a command takes to start; the commands not named are
    never shown."""
    name = args[0] if args else ""
    if not name or name.startswith("-"):
        return typer_app

    def text(value) -> str | None:
        return value if isinstance(value, str) else None  # Typer's unset names are placeholders

    groups = [
        info for info in typer_app.registered_groups if (text(info.name) or text(info.typer_instance.info.name)) == name
    ]
    commands = [
        info
        for info in typer_app.registered_commands
        if (text(info.name) or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    if len(groups) + len(commands) != 1:
        return typer_app
    if groups:
        group = copy.copy(groups[0])
        group.typer_instance = _app_for(args[1:], group.typer_instance)
        groups = [group]
    named = copy.copy(typer_app)
    named.registered_groups, named.registered_commands = groups, commands
    return named


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every failure into one line and an exit code."""
    from trajectories.errors import TrajectoryError

    args = sys.argv[1:] if argv is None else argv
    _register_commands(args)
    command = typer.main.get_command(_app_for(args))
    _plain_metavars(command)
    try:
        # Typer returns a command's exit code (130 for Ctrl+C) instead of exiting when not standalone.
        code = command.main(args=argv, prog_name="worldplay", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.TyperException as exc:
        sys.exit(_usage_error(exc, command, sys.argv[1:] if argv is None else argv))
    except typer.Abort:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
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
