"""`worldplay dashboard`: a Textual app to watch and steer worldplay jobs and workers."""

from worldplay_cli.tui.dashboard.app import Dashboard, run_dashboard
from worldplay_cli.tui.dashboard.source import DashboardSource, RedisSource, SourceUnavailable

__all__ = ["Dashboard", "DashboardSource", "RedisSource", "SourceUnavailable", "run_dashboard"]
