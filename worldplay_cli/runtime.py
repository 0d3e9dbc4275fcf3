"""What queue commands share: settings from flags, the Redis connection, worker subprocesses.

The CLI never imports `worker`: `worldplay worker` and foreground `worldplay generate` start
`python -m worker run ...` processes. They inherit our environment plus the resolved Redis URL (and the
flags that changed settings), so they see exactly the settings this command saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worldplay_cli.contract.settings import Settings, load_settings

if TYPE_CHECKING:
    from redis import Redis


class Runtime:
    """Settings resolved from this command's flags, and a lazily opened Redis connection."""

    def __init__(self, config: Path | None = None, redis_url: str | None = None, output_root: Path | None = None):
        self.config = config
        self.overrides = {"redis_url": redis_url, "output_root": output_root}
        self.settings: Settings = load_settings(self.overrides, config)
        self._conn: Redis | None = None
        self.url: str | None = None

    @property
    def conn(self) -> Redis:
        from worldplay_cli.redis_server import connect_url, redis_url, start

        if self._conn is None:
            if not self.settings.redis_url:
                _announce_start(start(self.settings))
            self.url = redis_url(self.settings, start_embedded=False)
            self._conn = connect_url(self.url)
        return self._conn

    def child_env(self) -> dict[str, str]:
        """Environment for worker subprocesses: ours, plus the resolved URL and our setting flags."""
        self.conn  # resolve (and start the embedded server) before any child needs it
        env = dict(os.environ)
        env["WORLDPLAY_REDIS_URL"] = self.url or ""
        env["WORLDPLAY_OUTPUT_ROOT"] = str(self.settings.output_root)
        if self.config is not None:
            env["WORLDPLAY_CONFIG"] = str(self.config)
        return env

    def spawn_worker(
        self,
        queue: str,
        gpus: tuple[int, ...] = (),
        burst: bool = False,
        max_jobs: int | None = None,
        name: str | None = None,
        quiet: bool = False,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        args = [sys.executable, "-m", "worker", "run", "--queue", queue, "--exit-with-parent"]
        env = {**self.child_env(), **(env_extra or {})}
        if gpus:
            args += ["--gpus", "+".join(str(gpu) for gpu in gpus)]
            # Set before exec (not only by the worker itself) so CUDA never sees the other GPUs.
            env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=",".join(str(gpu) for gpu in gpus))
        if burst:
            args.append("--burst")
        if max_jobs is not None:
            args += ["--max-jobs", str(max_jobs)]
        if name:
            args += ["--name", name]
        output = subprocess.DEVNULL if quiet else None
        # Own session: a Ctrl+C in the terminal reaches only us, and we decide what the workers get.
        return subprocess.Popen(args, env=env, stdout=output, stderr=output, start_new_session=True)


def _announce_start(state: dict) -> None:
    """The embedded server outlives the command that started it: say so, once, when it is started."""
    from worldplay_cli.output import err_console

    if state.get("started_now"):
        err_console.print(
            f"started the embedded Redis server (pid {state.get('pid')}, data in {state['data_dir']}); it keeps "
            "running for later commands and workers: `worldplay server stop` ends it",
            highlight=False,
            soft_wrap=True,
        )


def parse_gpu_sets(text: str | None) -> list[tuple[int, ...]]:
    """`0,1` -> two sets of one GPU; `0-3` -> one set of four; `0+1,2+3` -> two sets of two."""
    from worldplay_cli.contract.errors import BadInput

    if not text:
        return []
    sets: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        try:
            if "-" in item:
                first, last = (int(part) for part in item.split("-", 1))
                ids = tuple(range(first, last + 1))
            else:
                ids = tuple(int(part) for part in item.split("+"))
        except ValueError:
            raise BadInput(f"invalid GPU set {item!r} in --gpus {text!r}", "use e.g. 0,1 or 0-3 or 0+1,2+3") from None
        if not ids or min(ids) < 0:
            raise BadInput(f"invalid GPU set {item!r} in --gpus {text!r}", "use e.g. 0,1 or 0-3 or 0+1,2+3")
        if seen & set(ids):
            raise BadInput(
                f"GPU {sorted(seen & set(ids))[0]} appears in two sets of --gpus {text!r}",
                "each GPU may serve one worker",
            )
        seen.update(ids)
        sets.append(ids)
    return sets
