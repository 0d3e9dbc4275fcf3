"""Our download vs `huggingface_hub.snapshot_download` of the same repository, same server, same run.

A stand-in Hub (tests/fake_hub.py) runs in its own process on 127.0.0.1 and serves one generated
repository of large LFS files (redirected to its CDN path, like the real Hub). Each contender fetches it
into a fresh cache, alternating, best of `--rounds`. Printed: seconds, MB/s and the ratio
`snapshot_download time / our time` (>= 1.0: we are at least as fast; the issue asks for >= 0.95).

    python bench/download.py [--files 4] [--mb 32] [--rounds 2] [--workers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

REPO = "bench/weights"


def _serve(files: int, megabytes: int, ready) -> None:
    from fake_hub import FakeHub

    hub = FakeHub()
    hub.add_repo(REPO, {f"shard-{index:02d}.safetensors": os.urandom(megabytes << 20) for index in range(files)})
    hub.start()
    ready.put(hub.url)
    threading.Event().wait()  # serve until the parent terminates this process


def run_snapshot_download(url: str, cache: Path, workers: int) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(REPO, cache_dir=cache, endpoint=url, token=False, max_workers=workers)


def run_ours(url: str, cache: Path, workers: int) -> None:
    from worldplay_cli.download.catalog import Piece
    from worldplay_cli.download.execute import execute
    from worldplay_cli.download.hub import HubAccess
    from worldplay_cli.download.layout import Target
    from worldplay_cli.download.modelscope import ModelScopeAccess
    from worldplay_cli.download.plan import plan_pieces

    piece = Piece(name="bench", title="bench", repo=REPO, target="weights")
    target = Target(model_dir=cache / "layout", cache_dir=cache, modelscope_cache=cache / "modelscope")
    hub, modelscope = HubAccess(endpoint=url), ModelScopeAccess()
    plan = plan_pieces([piece], target, hub, modelscope)
    execute(plan, target, hub, modelscope, workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--mb", type=int, default=32, help="size of each file in MiB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_XET"] = "1"

    ready = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(args.files, args.mb, ready), daemon=True)
    server.start()
    url = ready.get(timeout=120)
    total_mb = args.files * args.mb * (1 << 20) / 1e6
    best = {"snapshot_download": float("inf"), "worldplay": float("inf")}
    contenders = {"snapshot_download": run_snapshot_download, "worldplay": run_ours}
    try:
        for _ in range(args.rounds):
            for name, function in contenders.items():
                cache = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
                try:
                    start = time.perf_counter()
                    function(url, cache, args.workers)
                    best[name] = min(best[name], time.perf_counter() - start)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
    finally:
        server.terminate()
    print(f"{args.files} x {args.mb} MiB over loopback, best of {args.rounds}, {args.workers} workers")
    for name, seconds in best.items():
        print(f"  {name:<18} {seconds:7.3f} s  {total_mb / seconds:8.1f} MB/s")
    print(
        f"  ratio snapshot_download/worldplay = {best['snapshot_download'] / best['worldplay']:.2f} "
        "(>= 1.0: not slower; target >= 0.95)"
    )


if __name__ == "__main__":
    main()
