"""The CLI as a user times it: `worldplay --help` vs `rq --help`, and `worldplay jobs list` vs `rq info`
on an empty queue, 1,000 and 10,000 jobs, each a whole process, in turns (ours, rq, ours, rq ...) so a
drift of the machine's speed hits both, in the same run, on the same private Redis.

    python bench/jobs_list.py [--sizes 0,1000,10000] [--rounds 7]

The jobs are laid out as rq lays them out (bench/dashboard.py's `fill`: job hashes with worldplay's meta,
the jobs index, each job in its status registry). `rq info` lists every queue's and registry's size and
every worker; `worldplay jobs list` prints the newest page (50 rows) with progress, failures and the
count of jobs by status. Targets: `--help` and an empty `jobs list` <= 1.2x rq's; `jobs list` at 10,000
jobs <= 0.3 s and flat in the number of jobs. Each figure is the median over `--rounds` pairs, as wall
time and as CPU time (user + sys of the process); the ratio is the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dashboard import fill  # noqa: E402

BIN = Path(sys.executable).parent


def run_s(args: list[str], env: dict) -> tuple[float, float]:
    """(wall, cpu) seconds of one whole process: cpu (user + sys, from the kernel's accounting) is what
    a busy machine distorts least."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {stderr.decode().strip()[-500:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def paired(ours: list[str], theirs: list[str], env: dict, rounds: int) -> dict[str, tuple[float, float, float]]:
    """{"wall"|"cpu": (median ours s, median rq s, median of the per-pair ratios)}, after a warm-up of each."""
    run_s(ours, env)
    run_s(theirs, env)
    pairs = [(run_s(ours, env), run_s(theirs, env)) for _ in range(rounds)]
    return {
        figure: (
            statistics.median(a[index] for a, _ in pairs),
            statistics.median(b[index] for _, b in pairs),
            statistics.median(a[index] / b[index] for a, b in pairs),
        )
        for index, figure in enumerate(("wall", "cpu"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000,10000")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from worldplay_cli import redis_server
    from worldplay_cli.contract.settings import ServerSettings, Settings

    with tempfile.TemporaryDirectory(prefix="wp-bench-") as tmp:
        settings = Settings(server=ServerSettings(data_dir=Path(tmp) / "redis"), output_root=Path(tmp) / "out")
        redis_server.start(settings)
        try:
            url = redis_server.redis_url(settings)
            conn = redis_server.connect_url(url)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),  # this checkout, whichever is installed
                "WORLDPLAY_REDIS_URL": url,
                "WORLDPLAY_OUTPUT_ROOT": str(Path(tmp) / "out"),
                "WORLDPLAY_CONFIG": str(Path(tmp) / "none.toml"),
                "COLUMNS": "160",
            }
            # As installed: modules' bytecode cached (the warm-up writes ours; rq's came with its install).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            worldplay, rq = [str(BIN / "worldplay")], [str(BIN / "rq")]
            print(
                f"{'command':<34}{'ours s':>8}{'rq s':>8}{'ours/rq':>9}{'ours cpu':>10}{'rq cpu':>8}{'ours/rq':>9}"
                f"{'target':>16}"
            )

            def line(label: str, figures: dict, target: str) -> None:
                wall, cpu = figures["wall"], figures["cpu"]
                print(
                    f"{label:<34}{wall[0]:>8.3f}{wall[1]:>8.3f}{wall[2]:>9.2f}{cpu[0]:>10.3f}{cpu[1]:>8.3f}"
                    f"{cpu[2]:>9.2f}{target:>16}"
                )

            def verdict(ok: bool, what: str) -> str:
                return f"{what} {'ok' if ok else 'MISSED'}"

            figures = paired(worldplay + ["--help"], rq + ["--help"], env, args.rounds)
            line("--help", figures, verdict(figures["wall"][2] <= 1.2, "<=1.2x"))
            listed = {}
            for size in (int(part) for part in args.sizes.split(",")):
                if size:
                    fill(conn, size)
                else:
                    conn.flushdb()
                figures = paired(worldplay + ["jobs", "list"], rq + ["info", "--url", url], env, args.rounds)
                listed[size] = figures["wall"][0]
                if size == 0:
                    target = verdict(figures["wall"][2] <= 1.2, "<=1.2x")
                else:
                    target = verdict(figures["wall"][0] <= 0.3, "<=0.3 s")
                line(f"jobs list vs rq info, {size} jobs", figures, target)
            sizes = sorted(listed)
            if len(sizes) > 1 and listed[sizes[0]]:
                print(f"jobs list, {sizes[-1]} jobs / {sizes[0]} jobs: {listed[sizes[-1]] / listed[sizes[0]]:.2f}x")
        finally:
            redis_server.stop(settings)


if __name__ == "__main__":
    main()
