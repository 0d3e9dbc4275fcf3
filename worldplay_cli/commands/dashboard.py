"""`worldplay dashboard`: a terminal dashboard of jobs and workers (Textual)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, OutputRootOption, RedisUrlOption, check_redis_url_option


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard_command)


def dashboard_command(
    redis_url: RedisUrlOption = None,
    config: ConfigOption = None,
    output_root: OutputRootOption = None,
    refresh: Annotated[float, typer.Option("--refresh", min=0.2, help="Seconds between refreshes.")] = 1.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one snapshot (counts, newest jobs, workers) as JSON instead of opening the app."
        ),
    ] = False,
    redis: Annotated[
        Optional[str],
        typer.Option("--redis", hidden=True, help="Old spelling of --redis-url.", callback=check_redis_url_option),
    ] = None,
) -> None:
    """Watch and steer jobs and workers: sort, filter, follow logs, cancel, retry, re-queue, delete."""
    from worldplay_cli.contract.errors import WorldplayError
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.output import emit
    from worldplay_cli.redis_server import connect_url
    from worldplay_cli.redis_server import redis_url as resolve_url
    from worldplay_cli.tui.dashboard.source import RedisSource, SourceUnavailable

    settings = load_settings({"redis_url": redis_url or redis, "output_root": output_root}, config)
    url = resolve_url(settings)
    connect_url(url).close()  # an unreachable Redis is a one-line error here, not an empty dashboard
    source = RedisSource(url, settings)
    if as_json:
        try:
            emit(snapshot_json(source), True)
        except SourceUnavailable as exc:
            raise WorldplayError(f"lost Redis at {source.location}: {exc}") from None
        return
    from worldplay_cli.tui.dashboard.app import run_dashboard

    run_dashboard(source, refresh_s=refresh)


def snapshot_json(source) -> dict:
    from dataclasses import asdict

    from worldplay_cli.jobs_index import JobQuery

    snapshot = source.snapshot(JobQuery(limit=50))
    return {
        "redis": source.location,
        "counts": snapshot.page.counts,
        "suspended": snapshot.suspended,
        "queues": snapshot.queues,
        "jobs": [row.to_dict() for row in snapshot.page.rows],
        "workers": [
            {**view.row.to_dict(), "gpu_stats": [asdict(gpu) for gpu in view.gpus]} for view in snapshot.workers
        ],
    }
