"""Cold vs warm time-to-first-chunk of the resident runtime (targets: warm <= 10% of cold for a new prompt,
<= 5% for a repeated prompt and image).

    python bench/worker_warm.py [--nproc 1] [--pose w-7]

For a tiny and a mid-size random model in the official layout, one job goes to a fresh supervisor
(cold: start the rank group, load every component, encode, first chunk), then a job with another prompt
(warm, new prompt: the weights are resident, the prompt is encoded) and that job again (warm, repeated:
the conditioning cache has its encoder states and text K/V). Time to first chunk = job sent -> the first chunk's last denoising
step reported. Cold also pays starting the rank processes (torch import) and loading; warm pays
encoding and the chunk itself. Runs on CPU; on a GPU host, --model-dir measures the released model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.models.transformer import WorldPlayTransformerConfig  # noqa: E402
from worker.runtime import client  # noqa: E402
from worldplay_cli.contract.settings import Settings  # noqa: E402
from worldplay_cli.submit import GenerateRequest, prepare, write_inputs  # noqa: E402

MID_CONFIG = WorldPlayTransformerConfig(
    in_channels=4, out_channels=4, hidden_size=512, num_heads=8, num_layers=8, rope_axes_dims=(16, 24, 24),
    text_states_dim=16, vision_states_dim=24, byt5_hidden_size=512,
)  # fmt: skip


def write_models(root: Path) -> dict[str, Path]:
    from worker.models.tiny import write_tiny_transformer
    from worker.pipeline.tiny_model import write_tiny_model

    tiny = write_tiny_model(root / "tiny")
    mid = write_tiny_model(root / "mid")
    write_tiny_transformer(mid, seed=0, config=MID_CONFIG)  # same layout, a bigger transformer
    return {"tiny": tiny, "mid-size": mid}


def time_to_first_chunk(owner: int, job: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    first_chunk = None
    connection = client.connect(owner)
    try:
        connection.send(job)
        while True:
            message = connection.receive(None)
            if (
                message["type"] == "progress"
                and first_chunk is None
                and message["chunk"] == 1
                and message["done"] * message["num_chunks"] == message["total"]
            ):
                first_chunk = time.perf_counter() - started
            if message["type"] == "result":
                return first_chunk, message["info"]
            if message["type"] in ("error", "canceled"):
                raise RuntimeError(f"job failed: {message}")
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=1, help="ranks (GPUs) per job")
    parser.add_argument("--pose", default="w-7")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="a real model directory instead of the random ones"
    )
    parser.add_argument("--variant", default="ar-distilled")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = {"given": args.model_dir} if args.model_dir else write_models(scratch / "models")
        settings = Settings(output_root=scratch / "outputs")
        settings.output_root.mkdir()
        size = {"width": 64, "height": 32} if not args.model_dir else {}
        jobs = {
            attempt: prepare(GenerateRequest(prompt=prompt, pose=args.pose, engine="native", variant=args.variant, **size), settings)
            for attempt, prompt in (("cold", "a quiet street"), ("new prompt", "a rainy harbour"), ("repeated", "a rainy harbour"))
        }  # fmt: skip
        rows = []
        for name, model_dir in models.items():
            # a stand-in owner process: the supervisor lives while it does
            owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            try:
                timings, infos = [], []
                for attempt, prepared in jobs.items():
                    job_id = f"{name}-{attempt.replace(' ', '-')}"
                    job_dir = write_inputs(settings, job_id, prepared)
                    (job_dir / "attempt").mkdir()
                    job = {"type": "job", "spec": prepared.spec.model_dump(mode="json"), "job_dir": str(job_dir),
                           "out_dir": str(job_dir / "attempt"), "model_dir": str(model_dir), "nproc": args.nproc,
                           "profile": "auto"}  # fmt: skip
                    seconds, info = time_to_first_chunk(owner.pid, job)
                    timings.append(seconds)
                    infos.append(info)
                rows.append((name, *timings, infos[0]["resident"]["load_s"], infos[2]["resident"]["reused_weights"]))
            finally:
                owner.kill()
                owner.wait()

    print(f"time to first chunk, {args.nproc} rank(s), variant {args.variant}, pose {args.pose!r}")
    print(
        f"{'model':<10} {'cold s':>8} {'new prompt s':>13} {'new/cold':>9} {'repeated s':>11} {'repeated/cold':>14} "
        f"{'load s (cold)':>14}  warm reused weights"
    )
    for name, cold, new, repeated, load_s, reused in rows:
        print(
            f"{name:<10} {cold:8.2f} {new:13.2f} {new / cold:9.1%} {repeated:11.2f} {repeated / cold:14.1%} "
            f"{load_s:14.2f}  {reused}"
        )
    print("warm = encode + first chunk only; on CPU the mid-size model's compute is a large share of it, on a GPU")
    print("host with the released weights loading dominates cold (minutes) and warm is the first chunk (seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
