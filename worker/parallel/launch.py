"""Starting a group of rank processes the way torchrun does, and joining the group from inside a rank.

Ranks learn their place from the torchrun environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), so a rank program runs the same under `torchrun` and under `spawn_ranks`.
Collective timeouts are set deliberately short: with the 10-minute default a dead peer leaves the others
blocked for ten minutes (performance-reliability D1), and one inference collective takes milliseconds.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, world_size: int, master_port: int, master_addr: str = "127.0.0.1") -> dict[str, str]:
    """The environment torchrun gives rank `rank` of a single-node group."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def spawn_ranks(
    command: Sequence[str],
    world_size: int,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    master_port: int | None = None,
) -> list[subprocess.Popen]:
    """Start `world_size` processes running `command` (argv after the Python interpreter) as one group.

    Each rank gets the torchrun variables, its own process group (so a kill of one rank never signals the
    caller) and, with `log_dir`, its output in `rank<r>.log`.
    """
    port = master_port or free_port()
    processes = []
    for rank in range(world_size):
        rank_environment = {**os.environ, **(env or {}), **rank_env(rank, world_size, port)}
        output = open(log_dir / f"rank{rank}.log", "ab") if log_dir else None
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, *command],
                    env=rank_environment,
                    stdout=output,
                    stderr=subprocess.STDOUT if output else None,
                    start_new_session=True,
                )
            )
        finally:
            if output:
                output.close()
    return processes


def join_ranks(processes: list[subprocess.Popen], timeout_s: float, grace_s: float = 5.0) -> list[int]:
    """Wait for every rank; as soon as one fails (or the deadline passes) stop the others.

    Returns the exit codes (negative: killed by that signal), in rank order.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        if all(code is not None for code in codes):
            return codes
        if any(code not in (None, 0) for code in codes):
            break
        time.sleep(0.05)
    stop_ranks(processes, grace_s)
    return [process.returncode for process in processes]


def stop_ranks(processes: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every live rank's process group, SIGKILL what is left after `grace_s`."""
    import signal

    for signal_number, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        live = [process for process in processes if process.poll() is None]
        for process in live:
            try:
                os.killpg(process.pid, signal_number)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        for process in live:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def init_from_env(timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S, backend: str | None = None) -> RankInfo:
    """Join the group described by the torchrun variables: NCCL on CUDA (one device per local rank), gloo
    otherwise, with `timeout_s` for every collective."""
    import torch
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        # a failed collective aborts the communicator and raises instead of leaving the process wedged
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return RankInfo(rank, world_size, local_rank, backend)


def exit_rank(code: int, meet_peers: bool = True) -> NoReturn:
    """End a rank process with `code`. In a process group, a rank that succeeded first meets its peers at a
    barrier (with `meet_peers`: one leaving while a peer is still in the last collective would fail that
    peer), destroys the group, and ends without the interpreter's teardown: even after the destroy, gloo's
    threads can be destroyed still joinable at interpreter exit and abort a clean run (`terminate called
    without an active exception`, SIGABRT; 6 runs in 20 of a two-rank program, none in 30 ending this way).
    A rank that failed waits for nobody: its peers may never reach the barrier."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    if code == 0:
        if meet_peers:
            dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
