"""Distillation: a tiny 4-step self-forcing student against its 50-step guided teacher, on synthetic rooms.

    python bench/distill.py --work /tmp/distill-bench [--teacher-steps 1500] [--distill-steps 300]

Stages (each cached in --work, so a re-run continues; the clips, model directory and prepared latents are
the action-following bench's, `bench/action_following.py`, with the grey pooling VAE whose decoded videos
show the motion):
1. the teacher: the AR recipe (`ar` method, CFG dropout 0.1) trained from scratch on random walks;
2. the student: self-forcing (DMD2) from the teacher's weights, teacher = critic init = the teacher, the
   teacher's score guided at `--guidance`, 4 warped steps, ode sampling (the Euler sampler inference runs);
3. evaluation on the scripted validation clips, every row from the same noise per clip, against the
   teacher's 50-step guided rollout (the target): latent MSE and decoded PSNR, plus the action-following
   pixel EPE (lower is better) of each row and the drift score.

Rows: the teacher at 50 steps (the target itself: MSE 0), the teacher at 4 steps with and without its
guidance (what the student must beat: few steps without distillation), the student before distillation
(the teacher's weights at 4 steps, no guidance: the same as the previous row, listed as the starting
point), the student after distillation, and two controls: the student conditioned on another clip's
actions and cameras (its action following is real if this scores clearly worse), and a student distilled
the same way from the unguided teacher (guidance 1): if the distilled student's agreement with the guided
50-step target comes from the teacher's guided score, this one agrees less.
Printed side by side with the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

# the sibling bench's stages, and the checkout itself (its top-level packages, whatever the install maps)
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from action_following import model_dir, prepare, render  # noqa: E402 (the cached stages of that bench)

WINDOW = 12
CHUNK = 4


def teacher_config(work: Path, model: Path, data: Path, steps: int, seed: int):
    from worldplay_cli.contract.training import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": {"model_dir": str(model), "init": "ar"},
            "data": {"path": str(data), "cfg_dropout": 0.1},
            "method": {"name": "ar", "chunk_latents": CHUNK, "window_latents": WINDOW, "context_latents": 4},
            "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": 20},
            "max_steps": steps,
            "seed": seed,
            "checkpoint": {"output_dir": str(work / "teacher"), "every_steps": steps},
            "logging": {"every_steps": 100, "tensorboard": "off"},
        }
    )


def distill_config(work: Path, name: str, model: Path, data: Path, teacher: Path, args, method_changes=None):
    from worldplay_cli.contract.training import TrainConfig

    method = {
        "name": "self_forcing",
        "chunk_latents": CHUNK,
        "window_latents": WINDOW,
        "student_sample_type": args.sample_type,
        "generator_update_interval": args.update_interval,
        "real_score_guidance_scale": args.guidance,
        "min_timestep_ratio": 0.02,
        "max_timestep_ratio": 0.98,
        "memory_points": 4000,
        "teacher": {"init": str(teacher), "attention": "chunk_causal", "sampling_steps": 50, "guidance": args.guidance},
        "critic": {"learning_rate": args.critic_lr, "betas": [0.0, 0.999]},
        **(method_changes or {}),
    }
    return TrainConfig.model_validate(
        {
            "model": {"model_dir": str(model), "init": str(teacher)},
            "data": {"path": str(data), "cfg_dropout": 0.0},
            "method": method,
            "optimizer": {"learning_rate": args.student_lr, "weight_decay": 0.0, "betas": [0.0, 0.999]},
            "max_steps": args.distill_steps,
            "seed": args.seed,
            "checkpoint": {"output_dir": str(work / name), "every_steps": args.distill_steps},
            "validation": {
                "every_steps": args.distill_steps,
                "run_at_start": False,
                "max_clips": args.validation,
                "num_latents": WINDOW,
                "sampling_steps": 4,
                "guidance": 1.0,
                "metrics": ["action_following"],
            },
            "logging": {"every_steps": 25, "tensorboard": "off"},
        }
    )


def train(config, label: str):
    """Train, or take up the run's newest checkpoint (a finished run is loaded, not trained again)."""
    from worker.training.checkpoints import checkpoint_dirs
    from worker.training.trainer import Hooks, Trainer

    def report(record: dict) -> None:
        if record["kind"] == "train":
            extra = "" if record.get("generator_loss") is None else f"  generator {record['generator_loss']:.4f}"
            print(f"  {label} step {record['step']}  loss {record['loss']:.4f}{extra}", flush=True)

    existing = checkpoint_dirs(Path(config.checkpoint.output_dir))
    trainer = Trainer(config, resume_from=existing[-1][1] if existing else None, hooks=Hooks(on_metrics=report))
    if trainer.start_step < config.max_steps:
        trainer.run()
    return trainer


def evaluate(validator, rows: dict, target_name: str, latents_count: int) -> dict[str, dict[str, float]]:
    """Per row: latent MSE and decoded PSNR against the target row, action-following EPE, drift."""
    from trajectories.evaluation.drift import drift_score
    from trajectories.evaluation.flow import action_following
    from trajectories.evaluation.images import psnr
    from worker.training.flow import video_flow

    calibration = validator.calibrated()
    results = {}
    targets = {}
    for name, make in rows.items():
        scores = {"mse": [], "psnr": [], "epe": [], "drift": []}
        for index, clip in enumerate(validator.clips):
            latents = make(clip, index)
            frames = validator.decode(latents)
            if name == target_name:
                targets[index] = (latents, frames)
            target_latents, target_frames = targets[index]
            scores["mse"].append(float((latents - target_latents).pow(2).mean()))
            scores["psnr"].append(min(psnr(frames, target_frames), 99.0))
            features = validator.features(clip, len(frames))
            scores["epe"].append(action_following(video_flow(frames), features, calibration)["pixel_epe"])
            scores["drift"].append(drift_score(frames, CHUNK))
        results[name] = {key: float(np.mean(values)) for key, values in scores.items()}
        print(f"  evaluated {name}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/worldplay-distill"))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--validation", type=int, default=4)
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--distill-steps", type=int, default=300)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--update-interval", type=int, default=2)
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--critic-lr", type=float, default=4e-4)
    parser.add_argument("--sample-type", choices=("ode", "sde"), default="ode")
    parser.add_argument("--no-control", action="store_true", help="skip the unguided-teacher control run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    from worker.training.synthetic import SynthOptions

    options = SynthOptions(
        width=args.size, height=args.size, num_latents=args.latents, texture_period=4.0, turn_step_deg=2.5,
        move_step=0.06,
    )  # fmt: skip
    raw = render(args.work, options, args.clips, args.validation, args.seed, scripted=False)
    model = model_dir(args.work, args.seed, "pooling", None, raw, 64, 2, "standard")
    data = args.work / "prepared"
    if not (data / "index.json").exists():
        data = prepare(args.work, raw, model)

    from worker.training.checkpoints import find_checkpoint

    print(f"teacher: {args.teacher_steps} steps of the AR recipe")
    train(teacher_config(args.work, model, data, args.teacher_steps, args.seed), "teacher")
    teacher_weights = find_checkpoint(args.work / "teacher") / "transformer" / "diffusion_pytorch_model.safetensors"

    print(f"student: {args.distill_steps} self-forcing iterations")
    distilled = train(distill_config(args.work, "student", model, data, teacher_weights, args), "student")
    control = None
    if not args.no_control:
        print("control: the same distillation from the unguided teacher")
        changes = {"real_score_guidance_scale": 1.0}
        control = train(distill_config(args.work, "control", model, data, teacher_weights, args, changes), "control")

    validator, teacher, student = distilled.validator, distilled.teacher, distilled.model
    student.eval()

    def rollout(model, steps, guidance, swap=False):
        def make(clip, index):
            if swap:
                donor = validator.clips[(index + 1) % len(validator.clips)]
                clip = replace(
                    clip, viewmats=donor.viewmats, intrinsics_norm=donor.intrinsics_norm, labels=donor.labels
                )
            with torch.no_grad():
                return validator.generate(model, clip, index, steps, guidance, False, WINDOW)

        return make

    from worker.models.checkpoint import load_transformer

    initial = load_transformer(model, teacher_weights, dtype=torch.float32)
    rows = {
        "teacher, 50 steps, CFG (target)": rollout(teacher, 50, args.guidance),
        "teacher, 4 steps, CFG": rollout(teacher, 4, args.guidance),
        "teacher, 4 steps, no CFG (= student before)": rollout(initial, 4, 1.0),
        "student, 4 steps, no CFG (distilled)": rollout(student, 4, 1.0),
        "control: student, other clip's actions": rollout(student, 4, 1.0, swap=True),
    }
    if control is not None:
        rows["control: distilled from the unguided teacher"] = rollout(control.model.eval(), 4, 1.0)
    print("evaluating")
    results = evaluate(validator, rows, "teacher, 50 steps, CFG (target)", WINDOW)

    print()
    print(
        f"distillation on {len(validator.clips)} scripted validation clips, {args.size}x{args.size}, {WINDOW} latents, "
        f"teacher {args.teacher_steps} steps, student {args.distill_steps} iterations, guidance {args.guidance}"
    )
    print(f"{'':46s} {'latent MSE':>10s} {'PSNR dB':>8s} {'action EPE':>10s} {'drift':>6s}")
    for name, scores in results.items():
        print(f"{name:46s} {scores['mse']:10.4f} {scores['psnr']:8.2f} {scores['epe']:10.3f} {scores['drift']:6.3f}")
    baseline = results["teacher, 4 steps, CFG"]
    plain = results["teacher, 4 steps, no CFG (= student before)"]
    ours = results["student, 4 steps, no CFG (distilled)"]
    print(
        f"latent MSE to the 50-step teacher: teacher@4 CFG / student {baseline['mse'] / ours['mse']:.2f}x, "
        f"teacher@4 no CFG / student {plain['mse'] / ours['mse']:.2f}x; PSNR student - teacher@4 CFG "
        f"{ours['psnr'] - baseline['psnr']:+.2f} dB"
    )
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
