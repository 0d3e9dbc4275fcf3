"""`worldplay config show|path|set`: the settings as worldplay sees them, and editing the config file."""

from __future__ import annotations

from typing import Annotated

import typer

from worldplay_cli.options import ConfigOption, JsonOption

config_app = typer.Typer(
    help="Settings: flags > WORLDPLAY_* environment > config file > defaults.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show_command(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The effective settings (secrets masked)."""
    from worldplay_cli.contract.settings import load_settings, settings_to_dict
    from worldplay_cli.output import emit

    data = settings_to_dict(load_settings(None, config))

    def render(console):
        def walk(prefix, node):
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)
                else:
                    console.print(f"{prefix}{key} = [bold]{value}[/]")

        walk("", data)

    emit(data, as_json, render)


@config_app.command("path")
def path_command(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Where the config file is (it may not exist yet)."""
    from worldplay_cli.contract.settings import default_config_path
    from worldplay_cli.output import emit

    path = config or default_config_path()
    emit({"path": str(path), "exists": path.exists()}, as_json, lambda c: c.print(str(path)))


@config_app.command("set")
def set_command(
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. output_root or worker.heartbeat_s.")],
    value: Annotated[str, typer.Argument(help="The value (checked before the file is written).")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Set one value in the config file (created 0600 if missing)."""
    from worldplay_cli.contract.settings import default_config_path, set_config_value
    from worldplay_cli.output import emit

    path = config or default_config_path()
    stored = set_config_value(path, key, value)
    emit({"path": str(path), "key": key, "value": stored}, as_json, lambda c: c.print(f"{key} = {stored}  ({path})"))
