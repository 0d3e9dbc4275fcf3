"""`python -m worker.training {train,resume,prepare,synth}`: the processes the CLI and the queue task start.

Output protocol (stdout, one JSON object per line): with `--events`, every metrics record as it happens;
always a last line `{"kind": "summary", ...}` on success or `{"kind": "error", "message", "hint"}` with
exit code 2 (bad input) or 1. Human-readable progress goes to stderr. SIGINT/SIGTERM stop a training run
after the current step, with a checkpoint. Under torchrun the metrics come from rank 0 and the last line
from each node's first process (so every node's `worldplay train` reports how the run ended); the
progress lines from rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path


def _print(record: dict) -> None:
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    try:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        # the reader went away (a queue task killed on cancel): keep training to the checkpoint, which
        # metrics.jsonl and the checkpoint directory record anyway
        sys.stdout = open(os.devnull, "w")


def _stderr(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def _train(args: argparse.Namespace, resume: bool) -> dict:
    from worker.training.checkpoints import find_checkpoint, read_metadata
    from worker.training.trainer import Hooks, Trainer
    from worldplay_cli.contract.training import apply_overrides, load_train_config, validate_config

    checkpoint = None
    if resume:
        checkpoint = find_checkpoint(args.target)
        data = apply_overrides(read_metadata(checkpoint)["config"], args.set)
        config = validate_config(data, str(checkpoint))
    elif args.config_json:
        config = validate_config(json.loads(Path(args.target).read_text()), args.target)
    else:
        config = load_train_config(args.target, args.set)
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True
        _stderr("stop requested: finishing the step and saving a checkpoint")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def on_metrics(record: dict) -> None:
        if args.events:
            _print(record)
        _stderr(describe(record))

    trainer = Trainer(
        config, resume_from=checkpoint, hooks=Hooks(on_metrics=on_metrics, should_stop=lambda: stop["requested"])
    )
    return asdict(trainer.run())


def describe(record: dict) -> str:
    """One human-readable progress line per metrics record."""
    if record["kind"] == "train":
        student = "" if record.get("generator_loss") is None else f"  student {record['generator_loss']:.4f}"
        return f"step {record['step']}/{record['max_steps']}  loss {record['loss']:.4f}{student}  lr {record['lr']:.2e}  {record['samples_per_s']:.2f} samples/s"
    if record["kind"] == "checkpoint":
        return f"checkpoint {record['path']}"
    scores = "  ".join(f"{key} {value:.4g}" for key, value in record.items() if isinstance(value, float))
    return f"validation at step {record['step']}: {scores}"


def _prepare(args: argparse.Namespace) -> dict:
    from worker.training.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        width=args.width,
        height=args.height,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        clips_per_shard=args.clips_per_shard,
        device=args.device,
    )

    def progress(done: int, total: int, clip_id: str, status: str) -> None:
        if args.events:
            _print({"kind": "clip", "done": done, "total": total, "id": clip_id, "status": status})
        _stderr(f"[{done}/{total}] {clip_id}: {status}")

    index = prepare_dataset(args.src, args.out, args.model_dir, options, progress)
    return {
        "out": str(Path(args.out).resolve()),
        "clips": len(index.clips),
        "rejected": [clip.model_dump() for clip in index.rejected],
        "width": index.width,
        "height": index.height,
        "fps": index.fps,
    }


def _synth(args: argparse.Namespace) -> dict:
    from worker.training.synthetic import SynthOptions, write_synthetic_dataset

    options = SynthOptions(
        width=args.width, height=args.height, fps=args.fps, num_latents=args.latents, move_step=args.move_step,
        turn_step_deg=args.turn_deg, texture_period=args.texture_period, view=args.view,
    )  # fmt: skip

    def progress(done: int, total: int, clip_id: str) -> None:
        _stderr(f"[{done}/{total}] {clip_id}")

    manifest = write_synthetic_dataset(args.out, args.clips, args.validation, options, args.seed, progress)
    return {
        "manifest": str(manifest.resolve()),
        "clips": args.clips,
        "validation": args.validation,
        "frames": options.num_frames,
    }


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m worker.training", description=__doc__.splitlines()[0])
    root.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    commands = root.add_subparsers(dest="command", required=True)
    for name in ("train", "resume"):
        command = commands.add_parser(name)
        command.add_argument("target", help="config YAML (train) or checkpoint / run directory (resume)")
        command.add_argument("--set", action="append", default=[], help="dotted override KEY=VALUE")
        command.add_argument("--config-json", action="store_true", help="target is an already validated config as JSON")
        command.add_argument("--events", action="store_true", help="print every metrics record as a JSON line")
    prepare = commands.add_parser("prepare")
    prepare.add_argument("src")
    prepare.add_argument("out")
    prepare.add_argument("--model-dir", required=True)
    prepare.add_argument("--width", type=int)
    prepare.add_argument("--height", type=int)
    prepare.add_argument("--min-frames", type=int, default=17)
    prepare.add_argument("--max-frames", type=int)
    prepare.add_argument("--clips-per-shard", type=int, default=8)
    prepare.add_argument("--device", default="cpu")
    prepare.add_argument("--events", action="store_true")
    synth = commands.add_parser("synth")
    synth.add_argument("out")
    synth.add_argument("--clips", type=int, default=32)
    synth.add_argument("--validation", type=int, default=4)
    synth.add_argument("--width", type=int, default=64)
    synth.add_argument("--height", type=int, default=64)
    synth.add_argument("--latents", type=int, default=24)
    synth.add_argument("--fps", type=int, default=16)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--move-step", type=float, default=0.04)
    synth.add_argument("--turn-deg", type=float, default=1.5)
    synth.add_argument("--texture-period", type=float, default=2.0)
    synth.add_argument("--view", choices=("first", "third"), default="first")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from worldplay_cli.contract.errors import WorldplayError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.command in ("train", "resume"):
            result = _train(args, resume=args.command == "resume")
        elif args.command == "prepare":
            result = _prepare(args)
        else:
            result = _synth(args)
    except WorldplayError as error:
        _print({"kind": "error", "message": error.message, "hint": error.hint})
        return error.exit_code
    _print({"kind": "summary", **result})
    return 0


if __name__ == "__main__":
    from worker.parallel.launch import exit_rank

    exit_rank(main())
