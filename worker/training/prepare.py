"""`worldplay data prepare`: raw clips -> cached VAE latents and condition states in safetensors shards.

Each clip is checked first (readable video, frame rate, actions and/or poses present and well formed,
long enough once video, actions and poses are aligned); a bad clip is recorded in the index with its
reason and the run goes on. Good clips are encoded once (VAE latents of the video and of its first frame,
LLM and byT5 states of the prompt, SigLIP states of the first frame) and written in groups of
`clips_per_shard`. The index is rewritten after every shard, so an interrupted run resumes where it
stopped: clips already in the index (kept or rejected) are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worker.training.controls import (
    FRAMES_PER_LATENT,
    ClipDataError,
    integrate_controls,
    labels_from_controls,
    labels_from_poses,
    latent_cameras,
    read_controls,
    read_poses,
)
from worker.training.dataset import NEGATIVE_NAME, SHARD_DIR, save_index, write_safetensors_atomic
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import (
    INDEX_NAME,
    DatasetIndex,
    PreparedClip,
    RejectedClip,
    SourceClip,
    SourceManifest,
    load_dataset_index,
    load_source_manifest,
)

# A clip's frame rate may differ from the dataset's by this fraction (containers round fps).
FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class PrepareOptions:
    width: int | None = None  # default: the first clip's size, rounded down to multiples of 16
    height: int | None = None
    min_frames: int = 17
    max_frames: int | None = None
    clips_per_shard: int = 8
    negative_prompt: str = ""
    device: str = "cpu"


@dataclass(frozen=True)
class LoadedClip:
    """A clip that passed the checks, aligned to 4k+1 frames and the output size."""

    source: SourceClip
    frames: np.ndarray  # [F, H, W, 3] uint8
    keyboard: np.ndarray  # [F, 4]
    mouse: np.ndarray  # [F, 2]
    c2w: np.ndarray  # [F, 4, 4]
    intrinsics: np.ndarray  # [F, 3, 3] pixels of the output size
    labels: np.ndarray  # [T]
    labels_from: str
    poses_from: str


def crop_resize_intrinsics(intrinsics: np.ndarray, source_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixel K after `trajectories.render.fit_image`'s centre crop to the output aspect and resize."""
    source_width, source_height = source_size
    width, height = size
    K = np.array(intrinsics, dtype=np.float64)
    if source_width * height > width * source_height:
        crop_width, crop_height = max(1, round(source_height * width / height)), source_height
    else:
        crop_width, crop_height = source_width, max(1, round(source_width * height / width))
    K[..., 0, 2] -= (source_width - crop_width) // 2
    K[..., 1, 2] -= (source_height - crop_height) // 2
    K[..., 0, :] *= width / crop_width
    K[..., 1, :] *= height / crop_height
    return K


def load_clip(
    root: Path, clip: SourceClip, manifest: SourceManifest, size: tuple[int, int], options: PrepareOptions
) -> LoadedClip:
    """Read and check one clip; raises ClipDataError with the rejection reason."""
    from trajectories.render import fit_image
    from worker.training.media import read_video

    if clip.actions is None and clip.poses is None:
        raise ClipDataError("no actions and no poses (a clip needs at least one of them)")
    try:
        video = read_video(root / clip.video)
    except (OSError, RuntimeError, StopIteration) as error:
        raise ClipDataError(
            f"unreadable video {clip.video}: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
        ) from None
    if abs(video.fps - manifest.fps) > FPS_TOLERANCE * manifest.fps:
        raise ClipDataError(f"video runs at {video.fps:g} fps, the dataset is {manifest.fps:g} fps")
    source_height, source_width = video.frames.shape[1:3]

    # 1. controls and poses; the shortest of video, actions and poses decides the usable length
    lengths = {"video": len(video.frames)}
    keyboard = mouse = c2w = intrinsics = None
    if clip.actions is not None:
        keyboard, mouse = read_controls(root / clip.actions, manifest.vocabulary)
        lengths["actions"] = len(keyboard)
    if clip.poses is not None:
        c2w, intrinsics = read_poses(root / clip.poses, source_width, source_height)
        lengths["poses"] = len(c2w)
    usable = min(lengths.values())
    if options.max_frames is not None:
        usable = min(usable, options.max_frames)
    frames = FRAMES_PER_LATENT * ((usable - 1) // FRAMES_PER_LATENT) + 1
    if frames < options.min_frames:
        detail = ", ".join(f"{name} {count}" for name, count in lengths.items())
        raise ClipDataError(f"too short: {frames} usable frames ({detail}); need at least {options.min_frames}")
    num_latents = (frames - 1) // FRAMES_PER_LATENT + 1

    # 2. labels from the controls when present (official precedence), poses from the pose file when present
    vocabulary = manifest.vocabulary
    third_person = vocabulary.view == "third"
    if keyboard is not None:
        keyboard, mouse = keyboard[:frames], mouse[:frames]
        labels, labels_from = labels_from_controls(keyboard, mouse, num_latents, third_person), "actions"
    if c2w is not None:
        c2w, intrinsics = c2w[:frames], crop_resize_intrinsics(intrinsics[:frames], (source_width, source_height), size)
        poses_from = "poses"
        if keyboard is None:
            labels, labels_from = labels_from_poses(c2w, num_latents, third_person), "poses"
            keyboard, mouse = np.zeros((frames, 4), np.float32), np.zeros((frames, 2), np.float32)
    else:
        c2w = integrate_controls(
            keyboard, mouse, vocabulary.translation_step, view=vocabulary.view, orbit_distance=vocabulary.orbit_distance
        )
        intrinsics = np.repeat(default_intrinsics(size)[None], frames, axis=0)
        poses_from = "actions"
    resized = np.stack([fit_image(frame, size[0], size[1]) for frame in video.frames[:frames]])
    return LoadedClip(clip, resized, keyboard, mouse, c2w, intrinsics, labels, labels_from, poses_from)


def default_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """The official default camera's field of view at `size` (pixels), for clips without poses."""
    from trajectories.render import DEFAULT_K_NORM

    return np.diag([size[0], size[1], 1.0]) @ DEFAULT_K_NORM


class ClipEncoder:
    """The model directory's VAE and condition encoders, applied once per clip (prompt states cached)."""

    def __init__(self, model_dir: Path, device: str):
        from worker.models.vae import load_vae
        from worker.pipeline.encoders import ConditionEncoders

        self.device = device
        self.vae = load_vae(model_dir / "vae", device=device, dtype=torch.float32)
        self.encoders = ConditionEncoders.from_model_dir(model_dir, device=device, dtype=torch.float32)
        self.scaling_factor = self.vae.config.scaling_factor

    def latents(self, frames: np.ndarray) -> torch.Tensor:
        """[F, H, W, 3] uint8 -> scaled latents [C, T, h, w]."""
        video = torch.from_numpy(frames).to(self.device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        return (self.vae.encode(video)[0] * self.scaling_factor).float().cpu()

    @torch.no_grad()
    def prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM and byT5 states of `prompt`, padding dropped: [L, D], [Lb, Db]."""
        llm, llm_mask = self.encoders.prompt.encode([prompt])
        byt5, byt5_mask = self.encoders.glyph.encode(prompt)
        return llm[0][llm_mask[0].bool()].float().cpu(), byt5[0][byt5_mask[0].bool()].float().cpu()

    @torch.no_grad()
    def vision(self, frame: np.ndarray) -> torch.Tensor:
        from PIL import Image

        return self.encoders.vision.encode(Image.fromarray(frame))[0].float().cpu()


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def clip_tensors(clip: LoadedClip, encoder: ClipEncoder) -> dict[str, torch.Tensor]:
    num_latents = len(clip.labels)
    viewmats, intrinsics_norm = latent_cameras(clip.c2w, clip.intrinsics, num_latents)
    prefix = clip.source.id
    tensors = {
        "latent": encoder.latents(clip.frames),
        "image_cond": encoder.latents(clip.frames[:1]),
        "keyboard": torch.from_numpy(clip.keyboard).float(),
        "mouse": torch.from_numpy(clip.mouse).float(),
        "c2w": torch.from_numpy(clip.c2w).float(),
        "intrinsics": torch.from_numpy(clip.intrinsics).float(),
        "viewmats": torch.from_numpy(viewmats).float(),
        "intrinsics_norm": torch.from_numpy(intrinsics_norm).float(),
        "labels": torch.from_numpy(clip.labels).long(),
        "vision": encoder.vision(clip.frames[0]),
    }
    return {f"{prefix}/{name}": tensor for name, tensor in tensors.items()}


def check_model_dir(model_dir: Path) -> None:
    from worker.pipeline.encoders import LLM_DIR, SIGLIP_DIR

    if not model_dir.is_dir():
        raise BadInput(
            f"model directory {model_dir} does not exist", "pass --model-dir pointing at the official layout"
        )
    for part in ("vae", LLM_DIR, SIGLIP_DIR):
        if not (model_dir / part).is_dir():
            raise BadInput(
                f"{model_dir} has no {part}/",
                "preparation needs the VAE and the condition encoders of the model directory",
            )


def prepare_dataset(
    src: str | Path,
    out: str | Path,
    model_dir: str | Path,
    options: PrepareOptions = PrepareOptions(),
    progress: Callable[[int, int, str, str], None] | None = None,
) -> DatasetIndex:
    """Prepare (or resume preparing) `src` into `out`; returns the final index."""
    src, out, model_dir = Path(src), Path(out), Path(model_dir).resolve()
    manifest = load_source_manifest(src)
    root = src if src.is_dir() else src.parent
    check_model_dir(model_dir)
    size = _output_size(root, manifest, options)

    # 1. start or resume
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX_NAME).exists():
        index = load_dataset_index(out)
        if (index.width, index.height, index.fps, index.model_dir) != (size[0], size[1], manifest.fps, str(model_dir)):
            raise BadInput(
                f"{out} holds a dataset prepared with other settings ({index.width}x{index.height}, {index.fps:g} fps, {index.model_dir})",
                "prepare into a new directory",
            )
    else:
        encoder_config = _vae_config(model_dir)
        index = DatasetIndex(
            fps=manifest.fps,
            width=size[0],
            height=size[1],
            latent_channels=encoder_config.latent_channels,
            scaling_factor=encoder_config.scaling_factor,
            vocabulary=manifest.vocabulary,
            model_dir=str(model_dir),
        )
    done = {clip.id for clip in index.clips} | {clip.id for clip in index.rejected}
    pending = [clip for clip in manifest.clips if clip.id not in done]
    if not pending and index.complete:
        return index
    index = index.model_copy(update={"complete": False})

    encoder = ClipEncoder(model_dir, options.device)
    if not (out / NEGATIVE_NAME).exists():
        llm, byt5 = encoder.prompt(options.negative_prompt)
        write_safetensors_atomic(out / NEGATIVE_NAME, {"llm": llm, "byt5": byt5})

    # 2. encode clip by clip; a full buffer becomes a shard and the index is saved with it
    shard_number = len({clip.shard for clip in index.clips})
    buffer: dict[str, torch.Tensor] = {}
    buffered: list[PreparedClip] = []
    rejected: list[RejectedClip] = []

    def flush() -> None:
        nonlocal index, shard_number, buffer, buffered, rejected
        if buffered:
            records = json.dumps([clip.model_dump(mode="json") for clip in buffered])
            write_safetensors_atomic(out / buffered[0].shard, buffer, {"clips": records})
            shard_number += 1
        index = index.model_copy(update={"clips": index.clips + buffered, "rejected": index.rejected + rejected})
        save_index(out, index)
        buffer, buffered, rejected = {}, [], []

    for position, clip in enumerate(pending):
        shard = f"{SHARD_DIR}/shard-{shard_number:05d}.safetensors"
        try:
            loaded = load_clip(root, clip, manifest, size, options)
        except ClipDataError as error:
            rejected.append(RejectedClip(id=clip.id, reason=str(error)))
            if progress:
                progress(position + 1, len(pending), clip.id, f"rejected: {error}")
            continue
        key = prompt_key(clip.prompt)
        if f"prompt/{key}/llm" not in buffer:
            llm, byt5 = encoder.prompt(clip.prompt)
            buffer[f"prompt/{key}/llm"], buffer[f"prompt/{key}/byt5"] = llm, byt5
        buffer.update(clip_tensors(loaded, encoder))
        buffered.append(
            PreparedClip(
                id=clip.id,
                split=clip.split,
                shard=shard,
                prompt=clip.prompt,
                prompt_key=key,
                num_frames=len(loaded.frames),
                num_latents=len(loaded.labels),
                labels_from=loaded.labels_from,
                poses_from=loaded.poses_from,
            )
        )
        if progress:
            progress(position + 1, len(pending), clip.id, "ok")
        if len(buffered) >= options.clips_per_shard:
            flush()
    flush()
    index = index.model_copy(update={"complete": True})
    save_index(out, index)
    return index


def _vae_config(model_dir: Path):
    from worker.models.vae import VAEConfig

    return VAEConfig.from_json(model_dir / "vae" / "config.json")


def _output_size(root: Path, manifest: SourceManifest, options: PrepareOptions) -> tuple[int, int]:
    if options.width is not None and options.height is not None:
        size = (options.width, options.height)
    else:
        from worker.training.media import video_size

        for clip in manifest.clips:
            try:
                width, height = video_size(root / clip.video)
            except (OSError, RuntimeError, StopIteration):
                continue
            size = (options.width or width // 16 * 16, options.height or height // 16 * 16)
            break
        else:
            raise BadInput("no clip of the dataset has a readable video", "check the video paths in dataset.json")
    if size[0] % 16 or size[1] % 16 or min(size) < 16:
        raise BadInput(f"output size {size[0]}x{size[1]} must be multiples of 16", "pass --width/--height")
    return size
