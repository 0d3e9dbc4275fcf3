"""The `worldplay` console script (and `python -m worldplay_cli`): the process set-up, then the app.

A command's start-up makes ~50,000 objects that live as long as it does (Typer's commands, rich,
pydantic's schemas, redis): at the default thresholds the cyclic collector walks them over a hundred
times while they are imported, and the interpreter's teardown walks them again; together a fifth of
`worldplay jobs list`'s CPU time. So before anything is imported, young objects are collected every
100,000 allocations instead of 700 (long-running commands, the TUIs, `logs -f`, still collect), and what
is alive at exit is left to the OS. Tests call `app.main(argv)` in their own process, with the defaults.

Pydantic looks for plugins (a scan of every installed distribution's entry points) when the first model
is built; worldplay's models are its own boundaries, so its processes skip that unless the environment
already says otherwise (`PYDANTIC_DISABLE_PLUGINS=0` loads them all).
"""

from __future__ import annotations

import atexit
import gc
import os


def run() -> None:
    gc.set_threshold(100_000, 10, 10)
    atexit.register(gc.freeze)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

    from worldplay_cli.app import main

    main()
