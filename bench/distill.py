"""Distillation: a tiny 4-step student against its 50-step guided teacher, on synthetic rooms.

    python bench/distill.py --work /tmp/distill-bench [--teacher-steps 1500] [--ode-steps 600]
                            [--pairs-per-clip 1] [--distill-steps 0]

Stages (each cached in --work, so a re-run continues; the clips, model directory and prepared latents are
the action-following bench's, `bench/action_following.py`, with the grey pooling VAE whose decoded videos
show the motion):
1. the teacher: the AR recipe (`ar` method, CFG dropout 0.1) trained from scratch on random walks;
2. with `--ode-steps`, the student's ODE initialisation (CausVid's, which Self-Forcing starts from): the
   teacher's 50-step guided rollouts of the training clips from `--pairs-per-clip` seeded noises each, then
   the teacher's weights regressed onto them at the 4-step sampler's timesteps (`ode_init`);
3. with `--distill-steps`, self-forcing (DMD2) from there (or from the teacher's weights), teacher = critic
   init = the teacher, the teacher's score guided at `--guidance`, 4 warped steps, ode sampling;
4. evaluation on the scripted validation clips (none of them trained on), every row from the same noise
   per clip, against the teacher's 50-step guided rollout (the target): latent MSE and decoded PSNR, plus
   the action-following pixel EPE (lower is better) of each row and the drift score.

Rows: the teacher at 50 steps (the target itself: MSE 0), the teacher at 4 steps with and without its
guidance (what the student must beat: few steps without distillation; the second is the student before
distillation), each student, and controls: a student conditioned on another clip's actions and cameras
(its action following is real if this scores clearly worse), and the same student made from the unguided
teacher (guidance 1; skipped with --no-control): if the agreement with the guided 50-step target comes
from the guided teacher, this one agrees less. Printed side by side with the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
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
TARGET = "teacher, 50 steps, CFG (target)"
BASELINE = "teacher, 4 steps, CFG"
PLAIN = "teacher, 4 steps, no CFG (= student before)"
PAIR_INDEX = 10_000  # noise indices of the teacher pairs (the validation rows use 0, 1, ...)


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
    steps = max(1, args.distill_steps)  # the evaluation's validation settings come from a config too
    return TrainConfig.model_validate(
        {
            "model": {"model_dir": str(model), "init": str(teacher)},
            "data": {"path": str(data), "cfg_dropout": 0.0},
            "method": method,
            "optimizer": {"learning_rate": args.student_lr, "weight_decay": 0.0, "betas": [0.0, 0.999]},
            "max_steps": steps,
            "seed": args.seed,
            "checkpoint": {"output_dir": str(work / name), "every_steps": steps},
            "validation": {
                "every_steps": steps,
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


def teacher_pairs(validator, teacher, clips, per_clip: int, guidance: float, path: Path) -> list[tuple]:
    """(clip, noise index, the teacher's 50-step rollout from that noise) for `per_clip` noises of every
    training clip: the noise -> sample pairs of the student's initialisation (cached in `path`)."""
    if path.is_file():
        return torch.load(path)
    pairs = []
    for clip_index, clip in enumerate(clips):
        for k in range(per_clip):
            index = PAIR_INDEX + clip_index * per_clip + k  # other noise than the validation rows' (0, 1, ...)
            with torch.no_grad():
                latents = validator.generate(teacher, clip, index, 50, guidance, False, WINDOW)
            pairs.append((clip_index, index, latents))
        print(f"  teacher pairs: clip {clip_index + 1}/{len(clips)}", flush=True)
    torch.save(pairs, path)
    return pairs


def ode_init(validator, model: Path, teacher_weights: Path, clips, pairs, steps: int, lr: float, seed: int, out: Path):
    """The student's initialisation on the teacher's noise -> sample pairs (CausVid's and Self-Forcing's ODE
    initialisation, as a reflow): from the teacher's weights, the chunk at each of the 4-step sampler's
    timesteps t lies on the straight path x_t = (1 − σ)·x0_teacher + σ·ε between its noise and the teacher's
    sample, its context is the teacher's sample re-encoded at t=14 as inference does, and the velocity target
    is ε − x0_teacher; the Euler sampler then stays on that path. Returns the weights file (cached)."""
    from safetensors.torch import save_file

    from worker.models.checkpoint import load_transformer
    from worker.models.scheduler import FlowMatchScheduler
    from worker.pipeline.memory import select_context_latents
    from worker.pipeline.rollout import AR_TEXT_TIMESTEP, CONTEXT_TIMESTEP

    weights = out / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        return weights
    student = load_transformer(model, teacher_weights, dtype=torch.float32).requires_grad_(True)
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    timesteps = FlowMatchScheduler(4, validator.settings.shift).timesteps.tolist()
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        clip_index, index, target = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        inputs = validator.rollout_inputs(clips[clip_index], index, 1.0, WINDOW)
        text = student.forward_text(inputs.prompts[0], AR_TEXT_TIMESTEP)
        losses = []
        for start in range(0, WINDOW, CHUNK):
            frames = slice(start, start + CHUNK)
            context = select_context_latents(inputs.w2c, start, CHUNK, inputs.points)
            cache = text.without_context()
            if context:
                cache = student.forward_context(
                    torch.cat([target[:, :, context], inputs.cond[:, :, context]], dim=1),
                    inputs.viewmats[:, context],
                    inputs.intrinsics[:, context],
                    inputs.actions[:, context],
                    text,
                    CONTEXT_TIMESTEP,
                )
            timestep = timesteps[int(torch.randint(len(timesteps), (1,), generator=generator))]
            sigma = timestep / 1000.0
            noise, clean = inputs.noise[:, :, frames], target[:, :, frames]
            noisy = (1 - sigma) * clean + sigma * noise
            velocity = student.forward_chunk(
                torch.cat([noisy, inputs.cond[:, :, frames]], dim=1),
                timestep,
                inputs.viewmats[:, frames],
                inputs.intrinsics[:, frames],
                inputs.actions[:, frames],
                cache,
            )
            losses.append((velocity.float() - (noise - clean)).pow(2).mean())
        loss = torch.stack(losses).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            print(f"  ode init step {step + 1}  loss {loss.item():.4f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().contiguous() for name, tensor in student.state_dict().items()}, str(weights))
    return weights


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


def parser() -> argparse.ArgumentParser:
    """The bench's options (`bench/distill_drift.py` adds its own to them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/worldplay-distill"))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--validation", type=int, default=4)
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--distill-steps", type=int, default=0, help="self-forcing iterations (0: none)")
    parser.add_argument("--ode-steps", type=int, default=600, help="the student's ODE initialisation (0: none)")
    parser.add_argument("--ode-lr", type=float, default=2e-4)
    parser.add_argument("--pairs-per-clip", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--update-interval", type=int, default=2)
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--critic-lr", type=float, default=4e-4)
    parser.add_argument("--sample-type", choices=("ode", "sde"), default="ode")
    parser.add_argument("--no-control", action="store_true", help="skip the unguided-teacher control run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def synth_options(args, num_latents: int):
    from worker.training.synthetic import SynthOptions

    return SynthOptions(
        width=args.size, height=args.size, num_latents=num_latents, texture_period=4.0, turn_step_deg=2.5,
        move_step=0.06,
    )  # fmt: skip


@dataclass
class Setup:
    """The cached stages every row starts from: the model directory, the prepared clips, the teacher and a
    validator on the scripted validation clips."""

    args: argparse.Namespace
    model: Path
    data: Path
    teacher_weights: Path
    teacher: torch.nn.Module
    dataset: object
    validator: object

    def student_init(self, guidance: float) -> Path:
        """The teacher's weights, or with --ode-steps its ODE initialisation on its pairs at `guidance`."""
        args = self.args
        if not args.ode_steps:
            return self.teacher_weights
        clips = [self.dataset.load(record.id) for record in self.dataset.clips("train")]
        print(f"teacher pairs at guidance {guidance}: {args.pairs_per_clip} noises x {len(clips)} clips")
        pairs = teacher_pairs(
            self.validator,
            self.teacher,
            clips,
            args.pairs_per_clip,
            guidance,
            args.work / f"pairs-g{guidance:g}-{args.pairs_per_clip}.pt",
        )
        print(f"ode init: {args.ode_steps} steps on {len(pairs)} pairs")
        out = args.work / f"ode-init-g{guidance:g}-{args.ode_steps}-{args.ode_lr:g}"
        return ode_init(
            self.validator, self.model, self.teacher_weights, clips, pairs, args.ode_steps, args.ode_lr, args.seed, out
        )


def setup(args) -> Setup:
    """Render, prepare and train the teacher (each stage cached in --work)."""
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    raw = render(args.work, synth_options(args, args.latents), args.clips, args.validation, args.seed, scripted=False)
    model = model_dir(args.work, args.seed, "pooling", None, raw, 64, 2, "standard")
    data = args.work / "prepared"
    if not (data / "index.json").exists():
        data = prepare(args.work, raw, model)

    from worker.models.checkpoint import load_transformer
    from worker.training.checkpoints import find_checkpoint
    from worker.training.dataset import PreparedDataset
    from worker.training.validation import Validator

    print(f"teacher: {args.teacher_steps} steps of the AR recipe")
    train(teacher_config(args.work, model, data, args.teacher_steps, args.seed), "teacher")
    teacher_weights = find_checkpoint(args.work / "teacher") / "transformer" / "diffusion_pytorch_model.safetensors"
    teacher = load_transformer(model, teacher_weights, dtype=torch.float32).eval()
    dataset = PreparedDataset(data)
    config = distill_config(args.work, "unused", model, data, teacher_weights, args)
    validator = Validator(config, dataset, args.work / "evaluation", torch.device("cpu"), True)
    return Setup(args, model, data, teacher_weights, teacher, dataset, validator)


def main() -> None:
    args = parser().parse_args()
    started = time.monotonic()
    bench = setup(args)
    model, data, teacher, validator, student_init = (
        bench.model,
        bench.data,
        bench.teacher,
        bench.validator,
        bench.student_init,
    )
    initial = student_init(args.guidance)
    suffix = f"-ode{args.ode_steps}" if args.ode_steps else ""
    distilled = control = None
    if args.distill_steps:
        print(f"student: {args.distill_steps} self-forcing iterations")
        name = f"student{suffix}"
        distilled = train(distill_config(args.work, name, model, data, initial, args), "student").model.eval()
    unguided = None
    if not args.no_control:
        unguided = student_init(1.0)
        if args.distill_steps:
            print("control: the same distillation from the unguided teacher")
            changes = {"real_score_guidance_scale": 1.0}
            name = f"control{suffix}"
            control = train(distill_config(args.work, name, model, data, unguided, args, changes), "control")
            control = control.model.eval()

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

    rows = {
        TARGET: rollout(teacher, 50, args.guidance),
        BASELINE: rollout(teacher, 4, args.guidance),
        PLAIN: rollout(teacher, 4, 1.0),
    }
    final = None
    if args.ode_steps:
        from worker.models.checkpoint import load_transformer

        ode_student = load_transformer(model, initial, dtype=torch.float32).eval()
        final = f"student: ODE init, {args.ode_steps} steps"
        rows[final] = rollout(ode_student, 4, 1.0)
        rows["control: that student, other clip's actions"] = rollout(ode_student, 4, 1.0, swap=True)
        if unguided is not None:
            rows["control: ODE init on the unguided teacher's pairs"] = rollout(
                load_transformer(model, unguided, dtype=torch.float32).eval(), 4, 1.0
            )
    if distilled is not None:
        final = f"student: {'ODE init + ' if args.ode_steps else ''}self-forcing, {args.distill_steps} iterations"
        rows[final] = rollout(distilled, 4, 1.0)
        rows["control: that student, other clip's actions "] = rollout(distilled, 4, 1.0, swap=True)
    if control is not None:
        rows["control: the same from the unguided teacher"] = rollout(control, 4, 1.0)
    print("evaluating")
    results = evaluate(validator, rows, TARGET, WINDOW)

    print()
    print(
        f"distillation on {len(validator.clips)} scripted validation clips, {args.size}x{args.size}, {WINDOW} latents, "
        f"teacher {args.teacher_steps} steps, guidance {args.guidance}; ODE init {args.ode_steps} steps "
        f"(lr {args.ode_lr:g}, {args.pairs_per_clip} pairs per clip), self-forcing {args.distill_steps} iterations"
    )
    print(f"{'':52s} {'latent MSE':>10s} {'PSNR dB':>8s} {'action EPE':>10s} {'drift':>6s}")
    for name, scores in results.items():
        print(f"{name:52s} {scores['mse']:10.4f} {scores['psnr']:8.2f} {scores['epe']:10.3f} {scores['drift']:6.3f}")
    if final is not None:
        baseline, plain, ours = results[BASELINE], results[PLAIN], results[final]
        print(
            f"{final}: latent MSE to the 50-step teacher: teacher@4 CFG / student {baseline['mse'] / ours['mse']:.2f}x, "
            f"teacher@4 no CFG / student {plain['mse'] / ours['mse']:.2f}x; PSNR student - teacher@4 CFG "
            f"{ours['psnr'] - baseline['psnr']:+.2f} dB"
        )
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
