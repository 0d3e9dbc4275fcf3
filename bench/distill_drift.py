"""Drift on long rollouts: streaming long tuning against self-forcing, from the same ODE-initialised student.

    python bench/distill_drift.py --work DIR [the options of bench/distill.py] [--long-latents 48]
                                  [--drift-steps 200] [--schedule "50:12,200:48"] [--seeds 0 1] [--no-teacher-row]

DIR is a `bench/distill.py` work directory: its teacher and the student's ODE initialisation are taken
from there (or made, as that bench makes them). Then, on random walks of `--long-latents` latents rendered
like the bench's clips in rooms of another seed (`--long-clips` for training, `--validation` held out: the
scripted validation walks leave the room at this length), prepared with the same model directory:
1. self-forcing: `--drift-steps` iterations on 12-latent rollouts (the training length L), i.e. the first
   L latents of every clip;
2. streaming long tuning: the same iterations, update interval, learning rates and clips, with the staged
   `--schedule` (compact form; default a quarter of plain self-forcing on L, then streaming sequences of
   `--long-latents` scored in windows of L latents, 4 of them overlap);
3. every row rolled out over `--long-latents` (≥ 4L) latents of the held-out clips with 4 steps, no
   guidance, from the same noise per clip, and over L latents as a control (both methods train on that
   length, so there they should be alike). Drift score: docs/training.md §9 (0: the first chunk's look).

Controls: the ODE-initialised student untrained further (where both start), the clips' own frames
(`reference`, how much the scenes themselves change), the first frame held (drift 0: what a frozen video
scores in the motion column, the late quarter's mean flow, and the action EPE), the teacher's 50-step
guided rollout (skip with --no-teacher-row), each distillation seed of `--seeds`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from action_following import prepare  # noqa: E402 (the cached stage of that bench)
from distill import CHUNK, WINDOW, distill_config, parser, setup, synth_options, train  # noqa: E402


def long_data(args, model: Path) -> Path:
    """The bench's kind of random walks, `--long-latents` long, in rooms of another seed than the teacher's
    clips, prepared with the bench's model directory; the last `--validation` of them are held out (the
    scripted validation walks leave the room at this length)."""
    import json

    from worker.training.synthetic import write_synthetic_dataset

    work = args.work / f"long{args.long_latents}"
    raw, data = work / "raw", work / "prepared"
    if (data / "index.json").exists():
        return data
    if not (raw / "dataset.json").exists():
        print(f"rendering {args.long_clips} + {args.validation} random walks of {args.long_latents} latents")
        options = synth_options(args, args.long_latents)
        manifest_path = write_synthetic_dataset(raw, args.long_clips + args.validation, 0, options, args.seed + 100)
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["clips"][args.long_clips :]:
            entry["split"] = "validation"
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return prepare(work, raw, model)


def streaming_changes(args) -> dict:
    schedule = args.schedule or f"{args.drift_steps // 4}:{WINDOW},{args.drift_steps}:{args.long_latents}"
    return {
        "name": "streaming_long_tuning",
        "window_latents": args.long_latents,
        "multi_phased_distill_schedule": schedule,
        "streaming_chunk_size": WINDOW,
        "streaming_fixed_overlap_latents": CHUNK,
    }


def main() -> None:
    options = parser()
    options.add_argument("--long-latents", type=int, default=48, help="rollout length (≥ 4 x 12)")
    options.add_argument("--long-clips", type=int, default=16)
    options.add_argument("--drift-steps", type=int, default=200, help="iterations of each method")
    options.add_argument("--schedule", default=None, help="streaming stages, compact form")
    options.add_argument("--seeds", type=int, nargs="+", default=[0], help="distillation seeds")
    options.add_argument("--no-teacher-row", action="store_true")
    args = options.parse_args()
    started = time.monotonic()
    bench = setup(args)
    initial = bench.student_init(args.guidance)

    from trajectories.evaluation.drift import drift_score
    from trajectories.evaluation.flow import action_following
    from worker.models.checkpoint import load_transformer
    from worker.training.dataset import PreparedDataset
    from worker.training.flow import video_flow
    from worker.training.validation import Validator

    data = long_data(args, bench.model)
    students = {"ODE init (the start of both)": load_transformer(bench.model, initial, dtype=torch.float32).eval()}
    for seed in args.seeds:
        run = argparse.Namespace(**{**vars(args), "seed": seed, "distill_steps": args.drift_steps})
        tag = f"{args.drift_steps}-s{seed}"
        print(f"self-forcing, seed {seed}: {args.drift_steps} iterations on {WINDOW} latents")
        config = distill_config(args.work, f"drift-sf-{tag}", bench.model, data, initial, run)
        students[f"self-forcing, seed {seed}"] = train(config, "self-forcing").model.eval()
        changes = streaming_changes(args)
        print(
            f"streaming long tuning, seed {seed}: {args.drift_steps} iterations, {changes['multi_phased_distill_schedule']}"
        )
        config = distill_config(args.work, f"drift-stream-{tag}", bench.model, data, initial, run, changes)
        students[f"streaming long tuning, seed {seed}"] = train(config, "streaming").model.eval()

    config = distill_config(args.work, "unused", bench.model, data, initial, args)
    validator = Validator(config, PreparedDataset(data), args.work / "evaluation-long", torch.device("cpu"), True)
    lengths = (WINDOW, args.long_latents)
    rows: dict[str, dict[int, list[float]]] = {}
    # a student that drifted less by freezing: its late motion (flow px per frame) would fall, and the EPE is
    # the action following over the long rollout
    calibration = validator.calibrated()
    epe: dict[str, list[float]] = {}
    motion: dict[str, list[float]] = {}

    def score(name: str, generate) -> None:
        rows[name], epe[name], motion[name] = {length: [] for length in lengths}, [], []
        for index, clip in enumerate(validator.clips):
            for length in lengths:
                with torch.no_grad():
                    frames = validator.decode(generate(clip, index, length))
                rows[name][length].append(drift_score(frames, CHUNK))
            flow, features = video_flow(frames), validator.features(clip, len(frames))
            epe[name].append(action_following(flow, features, calibration)["pixel_epe"])
            # mean flow magnitude over the last quarter, where the drift score looks: does the video still move
            motion[name].append(float(np.linalg.norm(flow[-len(flow) // 4 :], axis=1).mean()))
        print(f"  evaluated {name}", flush=True)

    print(f"evaluating on {len(validator.clips)} held-out clips")
    score("reference (the clips' own frames)", lambda clip, index, length: clip.latent[None, :, :length])
    # what the EPE column gives a rollout that cannot drift because it never moves
    score(
        "control: the first frame held",
        lambda clip, index, length: clip.latent[None, :, :1].expand(-1, -1, length, -1, -1),
    )
    if not args.no_teacher_row:
        score(
            "teacher, 50 steps, CFG",
            lambda clip, index, length: validator.generate(
                bench.teacher, clip, index, 50, args.guidance, False, length
            ),
        )
    for name, student in students.items():
        score(
            name,
            lambda clip, index, length, model=student: validator.generate(model, clip, index, 4, 1.0, False, length),
        )

    print()
    print(
        f"drift over {args.long_latents} latents ({args.long_latents / WINDOW:g}x the training length {WINDOW}) and over "
        f"{WINDOW}, {len(validator.clips)} held-out clips; {args.drift_steps} iterations per method "
        f"(interval {args.update_interval}, lr {args.student_lr:g} / {args.critic_lr:g}), streaming schedule "
        f"{streaming_changes(args)['multi_phased_distill_schedule']}; mean (per-clip values)"
    )
    print(
        f"{'':40s} {'drift @' + str(args.long_latents):>32s} {'drift @' + str(WINDOW):>32s} {'EPE @':>6s}{lengths[1]} {'motion px':>9s}"
    )
    for name, values in rows.items():
        cells = [
            f"{np.mean(values[length]):.3f} ({' '.join(f'{v:.2f}' for v in values[length])})" for length in lengths
        ]
        print(f"{name:40s} {cells[1]:>32s} {cells[0]:>32s} {np.mean(epe[name]):8.3f} {np.mean(motion[name]):9.3f}")
    for seed in args.seeds:
        forcing = np.mean(rows[f"self-forcing, seed {seed}"][args.long_latents])
        streaming = np.mean(rows[f"streaming long tuning, seed {seed}"][args.long_latents])
        print(f"seed {seed}: drift @{args.long_latents} self-forcing / streaming {forcing / streaming:.2f}x")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
