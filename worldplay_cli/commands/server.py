"""`worldplay server start|stop|status`: the embedded Redis worldplay manages by default."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, JsonOption

server_app = typer.Typer(
    help="The embedded Redis (used when no redis_url is set; started on demand by generate/worker/jobs).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _settings(config, port=None):
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.settings import load_settings

    settings = load_settings({"server": {"port": port}}, config)
    if settings.redis_url:
        raise BadInput(
            "redis_url is set, so worldplay does not manage a server",
            "unset redis_url (worldplay config show) to use the embedded server",
        )
    return settings


def _render(data):
    def render(console):
        if not data["running"]:
            console.print(f"embedded Redis: [yellow]not running[/] (data dir {data['data_dir']})")
            return
        console.print(
            f"embedded Redis [green]running[/]: pid {data['pid']}, version {data['version']}, {data['keys']} keys, "
            f"{data['used_memory']}"
        )
        console.print(f"socket {data['socket']}" + (f", 127.0.0.1:{data['port']}" if data.get("port") else ""))
        console.print(
            f"AOF {'on' if data['aof_enabled'] else 'off'} ({data['aof_last_write_status']}), "
            f"maxmemory-policy {data['maxmemory_policy']}, data dir {data['data_dir']}"
        )

    return render


@server_app.command("start")
def start_command(
    port: Annotated[Optional[int], typer.Option(help="Also listen on 127.0.0.1:PORT.", show_default=False)] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Start the embedded Redis (no-op if it runs). It keeps running after this command exits."""
    from worldplay_cli import redis_server
    from worldplay_cli.output import emit

    data = redis_server.start(_settings(config, port))
    emit(data, as_json, _render(data))


@server_app.command("stop")
def stop_command(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Stop the embedded Redis (the append-only file keeps queued jobs for the next start)."""
    from worldplay_cli import redis_server
    from worldplay_cli.output import emit

    stopped = redis_server.stop(_settings(config))
    emit({"stopped": stopped}, as_json, lambda c: c.print("stopped" if stopped else "was not running"))


@server_app.command("status")
def status_command(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Whether the embedded Redis runs, and its pid, socket, memory and persistence."""
    from worldplay_cli import redis_server
    from worldplay_cli.output import emit

    data = redis_server.status(_settings(config))
    emit(data, as_json, _render(data))
