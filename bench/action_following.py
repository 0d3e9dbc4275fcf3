"""Action following: a tiny WorldPlay model trained on synthetic rooms vs the same model untrained.

    python bench/action_following.py --work /tmp/af-bench [--steps 5000] [--size 48] [--vae pooling|random] [--vae-dir DIR]

The defaults are the run reported in docs/training.md §8 (about 35 minutes on one CPU core).

Stages (each cached in --work, so a re-run continues):
1. synthetic clips (random walks for training, scripted single-action clips for validation);
2. a tiny model directory whose VAE is, by default, the grey pooling VAE (`worker.models.tiny_vae`: the
   official architecture set to 4x4 block means, decoded with the motion spread evenly over each group of
   four frames), so generated latent videos decode to videos whose motion optical flow can measure; the
   random tiny VAE (`--vae random`) decodes everything to a flat grey, `--vae-dir` takes e.g. the released
   VAE on a GPU host. The tiny transformer's latent channels follow the VAE;
3. the clips prepared with that directory, then training (`worker.training`) with validation at step 0
   (untrained) and at the end (trained);
4. a control: the trained model conditioned on another validation clip's actions and cameras, scored
   against the clip's own actions (a model that ignores actions scores the same in both rows); and the
   validation's control loss: the held-out denoising loss with each clip's own controls vs another clip's
   (ratio 1 for a model that ignores them).

Printed side by side: the action-following pixel EPE (lower is better) and mean-flow cosine of untrained,
trained and control, and the reference (ground-truth latents through the same VAE): the floor. When the
reference videos show no motion the controls explain (calibration gains ~0, the random VAE), the script
says the figures are not evidence.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_dir(
    work: Path, seed: int, vae: str, vae_dir: Path | None, raw: Path, hidden_size: int, layers: int, init: str
) -> Path:
    """A tiny model directory whose VAE is the grey pooling VAE (default), the random tiny one, or
    `vae_dir` (linked); the transformer's latent channels follow the VAE's config; its weights are the
    modules' own initialisation (`init="standard"`) or the tests' randn * 0.05 (`"scaled"`)."""
    from dataclasses import replace

    from worker.models.tiny import TINY_TRANSFORMER_CONFIG, write_tiny_transformer
    from worker.models.tiny_vae import write_pooling_vae
    from worker.models.vae import VAEConfig
    from worker.pipeline.tiny_model import write_tiny_model

    root = work / "model"
    if (root / "bench-ready").exists():
        return root
    write_tiny_model(root, seed=seed)
    if vae_dir is not None:
        shutil.rmtree(root / "vae")
        (root / "vae").symlink_to(vae_dir.resolve(), target_is_directory=True)
    elif vae == "pooling":
        write_pooling_vae(root, scaling_factor=pooling_scaling_factor(raw))
    latent_channels = VAEConfig.from_json(root / "vae" / "config.json").latent_channels
    config = replace(
        TINY_TRANSFORMER_CONFIG,
        in_channels=latent_channels,
        out_channels=latent_channels,
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=hidden_size // TINY_TRANSFORMER_CONFIG.head_dim,
    )
    write_tiny_transformer(root, seed=seed, config=config, scale=None if init == "standard" else 0.05)
    (root / "bench-ready").write_text("1\n")
    return root


def pooling_scaling_factor(raw: Path, clips: int = 8) -> float:
    """1 / std of the pooling VAE's latents of the first training clips (unit-variance diffusion inputs)."""
    import json

    from worker.models.tiny_vae import pooling_vae
    from worker.training.media import read_video

    vae = pooling_vae()
    entries = [entry for entry in json.loads((raw / "dataset.json").read_text())["clips"] if entry["split"] == "train"]
    latents = []
    for entry in entries[:clips]:
        frames = read_video(raw / entry["video"]).frames
        frames = frames[: (len(frames) - 1) // 4 * 4 + 1]
        video = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
        latents.append(vae.encode(video).flatten())
    return float(1.0 / torch.cat(latents).std())


def render(work: Path, options, clips: int, validation: int, seed: int, scripted: bool) -> Path:
    from worker.training.synthetic import write_synthetic_dataset

    raw = work / "raw"
    if not (raw / "dataset.json").exists():
        print(f"rendering {clips} + {validation} synthetic clips at {options.width}x{options.height}")
        write_synthetic_dataset(raw, clips, validation, options, seed, scripted_training=scripted)
    return raw


def prepare(work: Path, raw: Path, model: Path) -> Path:
    from worker.training.prepare import PrepareOptions, prepare_dataset

    print("preparing (VAE latents, text and vision states)")
    prepared = work / "prepared"
    prepare_dataset(raw, prepared, model, PrepareOptions(clips_per_shard=16))
    return prepared


METHODS = {
    "ar": {"name": "ar", "chunk_latents": 4, "window_latents": 12, "context_latents": 4, "memory_points": 4000},
    "bi": {"name": "bi", "window_latents": 12},
}


def train_config(
    work: Path, model: Path, data: Path, method: str, steps: int, validation_clips: int, sampling_steps: int, seed: int
):
    from worldplay_cli.contract.training import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": {"model_dir": str(model), "init": method},
            "data": {"path": str(data), "cfg_dropout": 0.1},
            "method": METHODS[method],
            "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": 20},
            "max_steps": steps,
            "seed": seed,
            "checkpoint": {"output_dir": str(work / "run"), "every_steps": steps},
            "validation": {
                "every_steps": steps,
                "max_clips": validation_clips,
                "sampling_steps": sampling_steps,
                "num_latents": 12,
            },
            "logging": {"every_steps": 50, "tensorboard": "off"},
        }
    )


class SwappedActions:
    """Validation with each clip generated from the *next* clip's actions and cameras (the control)."""

    def __init__(self, validator):
        self.validator = validator

    def run(self, model, step: int) -> dict:
        from dataclasses import replace

        validator = self.validator
        original = validator.clips
        swapped = []
        for index, clip in enumerate(original):
            donor = original[(index + 1) % len(original)]
            swapped.append(
                replace(clip, viewmats=donor.viewmats, intrinsics_norm=donor.intrinsics_norm, labels=donor.labels)
            )
        generate = validator.generate
        validator.generate = lambda model, clip, index: generate(model, swapped[index], index)
        try:
            return validator.run(model, step)
        finally:
            validator.generate = generate


def static_scores(validator) -> dict:
    """What a model that ignores the controls and holds the first frame would score (zero flow)."""
    from trajectories.evaluation.flow import action_following

    scores = []
    for clip in validator.clips:
        frames, flows = validator.reference(clip)
        scores.append(
            action_following(np.zeros_like(flows), validator.features(clip, len(frames)), validator.calibration)
        )
    return {key: float(np.mean([score[key] for score in scores])) for key in scores[0]}


# The arguments the cached stages (clips, model directory, prepared latents) are built from.
CACHED_SETTINGS = (
    "size", "clips", "validation", "latents", "vae", "vae_dir", "texture_period", "turn_deg", "move_step",
    "scripted_training", "init", "hidden_size", "layers", "seed",
)  # fmt: skip


def check_cached_settings(args: argparse.Namespace) -> None:
    """Refuse a --work whose cached stages were built with other settings (they would be reused silently)."""
    import json

    settings = {name: str(getattr(args, name)) for name in CACHED_SETTINGS}
    stamp = args.work / "settings.json"
    if stamp.exists():
        built = json.loads(stamp.read_text())
        changed = sorted(name for name in settings if built.get(name) != settings[name])
        if changed:
            raise SystemExit(
                f"error: {args.work} was built with other {', '.join('--' + name.replace('_', '-') for name in changed)} "
                "(hint: pass a new --work, or the settings it was built with)"
            )
    else:
        stamp.write_text(json.dumps(settings, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/worldplay-action-following"))
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--validation", type=int, default=6)
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument(
        "--vae",
        choices=("pooling", "random"),
        default="pooling",
        help="pooling: the grey 4x4-pooling VAE (shows motion); random: the test model's random VAE (flat grey)",
    )
    parser.add_argument(
        "--vae-dir", type=Path, default=None, help="a VAE directory (official layout), e.g. the released one"
    )
    # faster than the synthetic defaults, so the controls matter more to the loss, and still within what
    # the pooling VAE's 4x4 blocks carry as motion (about one block per latent) and what fits the room
    parser.add_argument(
        "--texture-period", type=float, default=4.0, help="world units per texture repeat (larger: smoother)"
    )
    parser.add_argument("--turn-deg", type=float, default=2.5, help="degrees per frame while looking")
    parser.add_argument("--move-step", type=float, default=0.06, help="world units per frame while a key is held")
    parser.add_argument(
        "--scripted-training",
        action="store_true",
        help="train on the validation patterns (single held actions) in other rooms instead of random walks",
    )
    parser.add_argument("--method", choices=sorted(METHODS), default="ar")
    parser.add_argument(
        "--init",
        choices=("standard", "scaled"),
        default="standard",
        help="standard: the modules' own initialisation (training from scratch); scaled: the tests' randn * 0.05",
    )
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--sampling-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    check_cached_settings(args)
    started = time.monotonic()

    from worker.training.synthetic import SynthOptions

    options = SynthOptions(
        width=args.size, height=args.size, num_latents=args.latents, texture_period=args.texture_period,
        turn_step_deg=args.turn_deg, move_step=args.move_step,
    )  # fmt: skip
    raw = render(args.work, options, args.clips, args.validation, args.seed, args.scripted_training)
    model = model_dir(args.work, args.seed, args.vae, args.vae_dir, raw, args.hidden_size, args.layers, args.init)
    data = prepare(args.work, raw, model)

    from worker.training.trainer import Hooks, Trainer

    records: list[dict] = []
    config = train_config(
        args.work, model, data, args.method, args.steps, args.validation, args.sampling_steps, args.seed
    )
    print(f"training {args.steps} steps")
    trainer = Trainer(
        config,
        hooks=Hooks(
            on_metrics=lambda record: (
                records.append(record),
                record["kind"] == "train" and print(f"  step {record['step']}  loss {record['loss']:.4f}", flush=True),
            )
        ),
    )
    trainer.run()
    validations = [record for record in records if record["kind"] == "validation"]
    untrained, trained = validations[0], validations[-1]
    with torch.no_grad():
        control = SwappedActions(trainer.validator).run(trainer.model, args.steps + 1)
    calibration = trainer.validator.calibration
    static = static_scores(trainer.validator)

    rows = [("untrained", untrained), ("trained", trained), ("trained, other clip's actions", control)]
    print()
    print(
        f"action following on {args.validation} scripted validation clips, {args.size}x{args.size}, {args.method} method, after {args.steps} steps"
    )
    print(
        f"reference calibration gains (pitch, yaw, strafe, forward): {np.round(calibration.gains, 4).tolist()}, residual rms {calibration.residual_rms:.3f} px"
    )
    print(f"{'':32s} {'pixel EPE':>10s} {'mean-flow cos':>14s} {'PSNR':>7s}")
    for name, scores in rows:
        print(
            f"{name:32s} {scores['action_pixel_epe']:10.3f} {scores['action_mean_flow_cosine']:14.3f} {scores['psnr']:7.2f}"
        )
    print(f"{'a still video (no motion)':32s} {static['pixel_epe']:10.3f} {static['mean_flow_cosine']:14.3f}")
    print(f"{'reference (ground truth)':32s} {trained['reference_pixel_epe']:10.3f}")
    print(
        f"untrained / trained EPE: {untrained['action_pixel_epe'] / trained['action_pixel_epe']:.2f}x   "
        f"control / trained EPE: {control['action_pixel_epe'] / trained['action_pixel_epe']:.2f}x"
    )
    print()
    print(f"held-out denoising loss          {'own controls':>12s} {'other clip':>11s} {'other / own':>12s}")
    for name, scores in (("untrained", untrained), ("trained", trained)):
        print(
            f"{name:32s} {scores['control_loss_own']:12.4f} {scores['control_loss_other']:11.4f} {scores['control_loss_ratio']:12.3f}"
        )
    if max(abs(gain) for gain in calibration.gains) < 1e-3:
        print(
            "WARNING: the reference videos (ground truth through this VAE) show no motion the controls explain "
            "(calibration gains ~0): this VAE cannot support an action-following comparison; the figures above "
            "are not evidence either way. Pass a VAE that reconstructs the clips (--vae-dir)."
        )
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
