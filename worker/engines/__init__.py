"""Engines: what actually turns a job spec into a video. The worker picks one per job by name.

An engine is a class with a `name`, a `uses_gpu` flag and `run(spec, inputs, out_dir, reporter)`, which
writes `out_dir/video.mp4` and returns an `EngineResult`. The runner owns everything around it (job
directory, manifest, fencing, committing the video, failures); an engine only renders and reports.
Names map to classes in `worldplay_cli.contract.specs.ENGINES` (plus `WORLDPLAY_EXTRA_ENGINES`), so the CLI can
validate a name without importing the worker. The job vocabulary an engine speaks (`JobInputs`,
`EngineResult`, `JobFailed`, `refuse`) lives one floor down in `worker.job`; the first two are re-exported
here for engines plugged in through `WORLDPLAY_EXTRA_ENGINES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from worker.job import EngineResult, JobInputs, UnknownEngine
from worldplay_cli.contract.specs import JobSpec, engine_table

if TYPE_CHECKING:
    from worker.progress import Reporter

__all__ = ["Engine", "EngineResult", "JobInputs", "UnknownEngine", "get_engine"]


class Engine(Protocol):
    name: str
    uses_gpu: bool

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult: ...


def get_engine(name: str) -> Engine:
    """Instantiate the engine registered under `name`."""
    table = engine_table()
    if name not in table:
        raise UnknownEngine(f"unknown engine {name!r}; this worker has: {', '.join(sorted(table))}")
    module_name, _, attribute = table[name].partition(":")
    try:
        engine_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownEngine(f"engine {name!r} is not installed in this worker: {exc}") from None
    return engine_class()
