"""Validation during training: generate the validation clips with the current weights, write them with and
without a keyboard HUD, and score them.

- generation: the engine's own rollouts (`worker.pipeline.rollout`: AR chunks with memory-selected context
  at t=14, or bidirectional chunks), from the clip's first-frame latent, prompt, cameras and actions, with
  seeded noise so every validation round sees the same noise;
- reference: the clip's ground-truth latents decoded by the same VAE, so PSNR/SSIM measure the
  transformer and not the VAE;
- action following (`flow.py`): the optical flow of the generated video against the flow the clip's
  controls predict, with gains calibrated once on the reference videos at this resolution. The reference
  videos' own score is reported beside it (`reference_pixel_epe`): the best a model can do here.
- control loss (`control_loss_*`): the training loss on held-out windows of the validation clips with their
  own controls and with each window's actions and cameras taken from the next clip. A model that ignores
  the controls scores a ratio (other / own) of 1; the higher, the more its predictions depend on them.
  No sampling and no VAE, so it reads the same at any resolution and costs two forwards per clip.
- drift (`drift.py`): how far the colour distribution of the rollout's last chunks departs from its first
  chunk's, beside the reference video's own (`reference_drift`);
- teacher agreement (distillation): the student's latents against the teacher's many-step, guided latents
  from the same noise (`teacher_latent_mse`, decoded `teacher_psnr`); the teacher's are computed once.

Outputs: `<output_dir>/validation/step-<N>/<clip>.mp4`, `<clip>_hud.mp4` and `metrics.json` (per clip and
mean); the reference videos once under `validation/reference/`. A failed video write is logged in the
metrics and does not stop training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from trajectories.evaluation.drift import drift_score
from trajectories.evaluation.flow import FlowCalibration, action_following, calibrate, motion_features
from trajectories.evaluation.images import psnr, ssim
from worker.training.batches import SampleBuilder, collate, prompt_embeddings, prompt_to
from worker.training.dataset import ClipTensors, PreparedDataset
from worker.training.flow import video_flow
from worker.training.methods import attention_window, build_method, flow_matching_config
from worldplay_cli.contract.training import BiMethod, TrainConfig

CALIBRATION_NAME = "flow_calibration.json"


def frame_labels(clip: ClipTensors, num_frames: int) -> np.ndarray:
    """The action id shown on each video frame (the HUD convention of `trajectories.render`)."""
    from trajectories import Trajectory
    from trajectories.render import frame_actions

    num_latents = (num_frames - 1) // 4 + 1
    c2w = np.linalg.inv(clip.viewmats[:num_latents].double().numpy())
    return frame_actions(Trajectory(c2w, actions=clip.labels[:num_latents].numpy()))


def hud_frames(frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from trajectories.hud import Hud

    overlay = Hud(frames.shape[2], frames.shape[1])
    return np.stack([overlay.draw(frame, int(label)) for frame, label in zip(frames, labels)])


class Validator:
    def __init__(
        self, config: TrainConfig, dataset: PreparedDataset, output_dir: Path, device: torch.device, is_main: bool
    ):
        from worker.models.vae import load_vae
        from worker.pipeline.memory import sample_points_in_sphere

        self.config = config
        self.settings = config.validation
        self.dataset = dataset
        self.output_dir = Path(output_dir) / "validation"
        self.device = device
        self.is_main = is_main
        records = dataset.clips("validation") or dataset.clips("train")
        self.clips = [dataset.load(record.id) for record in records[: self.settings.max_clips]]
        self.uses_training_clips = not dataset.clips("validation")
        self.vae = load_vae(Path(config.model.model_dir) / "vae", device=device, dtype=torch.float32)
        self.negative = dataset.negative_prompt()
        self.points = sample_points_in_sphere(seed=self.settings.seed)
        self._references: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._teacher: dict[str, torch.Tensor] = {}
        self.calibration: FlowCalibration | None = None

    # -- generation ---------------------------------------------------------------------------------

    def chunk_latents(self) -> int:
        method = self.config.method
        return method.window_latents if isinstance(method, BiMethod) else method.chunk_latents

    def num_latents(self, clip: ClipTensors) -> int:
        chunk = self.chunk_latents()
        wanted = self.settings.num_latents or clip.num_latents
        return max(chunk, min(wanted, clip.num_latents) // chunk * chunk)

    def generate(
        self,
        model,
        clip: ClipTensors,
        index: int,
        steps: int | None = None,
        guidance: float | None = None,
        bidirectional: bool | None = None,
        count: int | None = None,
    ) -> torch.Tensor:
        """Scaled latents [1, C, T, h, w] of the clip generated by `model` (by default with the validation
        sampling and the method's rollout; a teacher passes its own)."""
        from worker.models.scheduler import FlowMatchScheduler
        from worker.pipeline.rollout import ar_rollout, bi_rollout

        method = self.config.method
        steps = steps or self.settings.sampling_steps
        guidance = guidance or self.settings.guidance
        bidirectional = isinstance(method, BiMethod) if bidirectional is None else bidirectional
        inputs = self.rollout_inputs(clip, index, guidance, count)
        scheduler = FlowMatchScheduler(steps, self.settings.shift)
        if not bidirectional:
            chunks = ar_rollout(
                model,
                scheduler,
                inputs,
                guidance,
                method.chunk_latents,
                round_latents=False,
                attention_window=attention_window(method),
            )
        else:
            chunks = bi_rollout(model, scheduler, inputs, guidance, method.window_latents, round_latents=False)
        return torch.cat([chunk.latents for chunk in chunks], dim=2)

    def rollout_inputs(self, clip: ClipTensors, index: int, guidance: float, count: int | None = None):
        """What a rollout of the clip's first `count` latents conditions on, and its noise: seeded by the
        validation seed + `index`, so the same index is the same noise for every model compared."""
        from worker.pipeline.rollout import RolloutInputs

        count = count or self.num_latents(clip)
        device = self.device
        generator = torch.Generator().manual_seed(self.settings.seed + index)
        noise = torch.randn((1, *clip.latent[:, :count].shape), generator=generator)
        cond = torch.zeros(1, clip.latent.shape[0] + 1, count, *clip.latent.shape[-2:])
        cond[:, :-1, :1] = clip.image_cond
        cond[:, -1, 0] = 1.0
        prompts = [prompt_embeddings(clip.prompt, clip.vision)]
        if guidance > 1:
            prompts.insert(0, prompt_embeddings(self.negative, clip.vision))
        return RolloutInputs(
            noise=noise.to(device),
            cond=cond.to(device),
            viewmats=clip.viewmats[None, :count].to(device),
            intrinsics=clip.intrinsics_norm[None, :count].to(device),
            actions=clip.labels[None, :count].to(device),
            w2c=clip.viewmats[:count].double(),
            prompts=[prompt_to(prompt, device) for prompt in prompts],
            points=self.points,
        )

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        from worker.pipeline.image import to_uint8_frames

        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            video = self.vae.decode(latents.float().to(self.device) / self.vae.config.scaling_factor)
        return to_uint8_frames(video)

    # -- references and calibration -----------------------------------------------------------------

    def reference(self, clip: ClipTensors) -> tuple[np.ndarray, np.ndarray]:
        """(decoded ground-truth frames, their flow), computed once per clip."""
        key = clip.record.id
        if key not in self._references:
            frames = self.decode(clip.latent[None, :, : self.num_latents(clip)])
            self._references[key] = (frames, video_flow(frames))
            if self.is_main:
                self._write(self.output_dir / "reference", key, frames, clip)
        return self._references[key]

    def features(self, clip: ClipTensors, num_frames: int) -> np.ndarray:
        return motion_features(clip.keyboard[:num_frames].numpy(), clip.mouse[:num_frames].numpy())

    def calibrated(self) -> FlowCalibration:
        if self.calibration is None:
            pairs = []
            for clip in self.clips:
                frames, flows = self.reference(clip)
                pairs.append((flows, self.features(clip, len(frames))))
            width = pairs[0][0].shape[-1]
            # focal length in pixels at the decoded size, from the clip's normalised intrinsics
            focal = float(self.clips[0].intrinsics_norm[0, 0, 0]) * width
            self.calibration = calibrate(pairs, focal)
            if self.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                self.calibration.save(self.output_dir / CALIBRATION_NAME)
        return self.calibration

    # -- control loss -------------------------------------------------------------------------------

    def control_losses(self, model, rounds: int = 4) -> dict[str, float]:
        """Mean held-out loss with the clips' own controls and with the next clip's (ValueError with fewer
        than two clips long enough for a training window)."""
        split = "train" if self.uses_training_clips else "validation"
        method = flow_matching_config(self.config.method)
        builder = SampleBuilder(self.dataset, method, self.settings.seed, cfg_dropout=0.0, split=split)
        clip_ids = builder.clips[: self.settings.max_clips]
        if len(clip_ids) < 2:
            raise ValueError(f"needs two {split} clips of at least {method.window_latents} latents")
        loss = build_method(method).loss
        clips = [self.dataset.load(clip_id) for clip_id in clip_ids]
        own, other = [], []
        for round_index in range(rounds):
            samples = [
                builder.sample(clip, np.random.default_rng([self.settings.seed, round_index, index]))
                for index, clip in enumerate(clips)
            ]
            # one window per forward: the memory a training step needs, not max_clips times it
            for index, sample in enumerate(samples):
                donor = samples[(index + 1) % len(samples)]
                swapped = {**sample, **{name: donor[name] for name in ("actions", "viewmats", "intrinsics")}}
                own.append(float(loss(model, collate([sample]).to(self.device))))
                other.append(float(loss(model, collate([swapped]).to(self.device))))
        own_mean, other_mean = float(np.mean(own)), float(np.mean(other))
        return {
            "control_loss_own": own_mean,
            "control_loss_other": other_mean,
            "control_loss_ratio": other_mean / own_mean,
        }

    # -- one validation round -----------------------------------------------------------------------

    def teacher_latents(self, teacher, clip: ClipTensors, index: int, count: int) -> torch.Tensor | None:
        """The teacher's many-step latents of the clip from the validation noise, computed once (it is
        frozen); a bidirectional teacher runs whole training windows, so only their multiple is compared."""
        sampling = self.config.method.teacher
        bidirectional = sampling.attention == "bidirectional"
        if bidirectional:
            count = count // self.config.method.window_latents * self.config.method.window_latents
        if not count:
            return None
        key = clip.record.id
        if key not in self._teacher:
            self._teacher[key] = self.generate(
                teacher, clip, index, sampling.sampling_steps, sampling.guidance, bidirectional, count
            )
        return self._teacher[key]

    def run(self, model, step: int, teacher=None) -> dict[str, float]:
        metrics_wanted = set(self.settings.metrics)
        per_clip: dict[str, dict] = {}
        errors: list[str] = []
        overall: dict[str, float] = {}
        if "control_loss" in metrics_wanted:
            try:
                overall = self.control_losses(model)
            except ValueError as error:
                errors.append(f"control_loss skipped: {error}")
        step_dir = self.output_dir / f"step-{step:06d}"
        for index, clip in enumerate(self.clips):
            latents = self.generate(model, clip, index)
            frames = self.decode(latents)
            reference_frames, reference_flows = self.reference(clip)
            scores: dict[str, float] = {}
            if "drift" in metrics_wanted:
                chunk = self.chunk_latents()
                scores["drift"] = drift_score(frames, chunk)
                scores["reference_drift"] = drift_score(reference_frames, chunk)
            if "teacher_agreement" in metrics_wanted and teacher is not None:
                target = self.teacher_latents(teacher, clip, index, latents.shape[2])
                if target is not None:
                    compared = latents[:, :, : target.shape[2]]
                    scores["teacher_latent_mse"] = float((compared.float() - target.float()).pow(2).mean())
                    scores["teacher_psnr"] = psnr(self.decode(compared), self.decode(target))
            if "psnr" in metrics_wanted:
                scores["psnr"] = psnr(frames, reference_frames)
            if "ssim" in metrics_wanted:
                scores["ssim"] = ssim(frames, reference_frames)
            if "action_following" in metrics_wanted:
                try:
                    calibration = self.calibrated()
                except ValueError as error:
                    errors.append(f"action_following skipped: {error}")
                    metrics_wanted.discard("action_following")
                else:
                    features = self.features(clip, len(frames))
                    generated = action_following(video_flow(frames), features, calibration)
                    scores.update({f"action_{key}": value for key, value in generated.items()})
                    scores["reference_pixel_epe"] = action_following(reference_flows, features, calibration)[
                        "pixel_epe"
                    ]
            per_clip[clip.record.id] = scores
            if self.is_main:
                try:
                    self._write(step_dir, clip.record.id, frames, clip)
                except (OSError, RuntimeError) as error:  # VideoError is a RuntimeError
                    errors.append(f"{clip.record.id}: video not written ({error})")
        keys = sorted({key for scores in per_clip.values() for key in scores})
        mean = {key: float(np.mean([scores[key] for scores in per_clip.values() if key in scores])) for key in keys}
        mean.update(overall)
        if self.is_main:
            step_dir.mkdir(parents=True, exist_ok=True)
            summary = {
                "step": step,
                "mean": mean,
                "per_clip": per_clip,
                "errors": errors,
                "training_clips": self.uses_training_clips,
            }
            (step_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        return mean

    def _write(self, directory: Path, name: str, frames: np.ndarray, clip: ClipTensors) -> None:
        from worker.video import write_video

        fps = self.dataset.index.fps
        directory.mkdir(parents=True, exist_ok=True)
        write_video(frames, directory / f"{name}.mp4", fps, overwrite=True)
        if self.settings.hud:
            write_video(
                hud_frames(frames, frame_labels(clip, len(frames))), directory / f"{name}_hud.mp4", fps, overwrite=True
            )
