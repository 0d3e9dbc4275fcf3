"""Printing results: rich for people, `--json` for machines. Commands print only through here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def emit(data: Any, as_json: bool, render: Callable[[Console], None] | None = None) -> None:
    """Print `data` as JSON when asked, else call `render` with the console (or pretty-print `data`)."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(console)
    else:
        console.print(data)


def warn(message: str | None) -> None:
    """One `warning: ...` line on stderr, never wrapped (people copy the commands in it)."""
    from rich.markup import escape

    if message:
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
