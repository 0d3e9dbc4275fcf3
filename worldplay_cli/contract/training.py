"""Training contracts (torch-free): the run config, the raw dataset manifest and the prepared dataset index.

The CLI validates a config (YAML + dotted overrides) before anything starts or is enqueued; the worker
re-validates the same models. Every model has `extra="forbid"` and a `version`, so a typo or a config
from another version is an error, never a silently ignored key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from worldplay_cli.contract import layout, specs
from worldplay_cli.contract.errors import BadInput, first_error

CONFIG_VERSION = 1
DATASET_VERSION = 1
INDEX_NAME = "index.json"
MANIFEST_NAME = "dataset.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- action vocabulary and datasets ----------------------------------------------------------------------


class ActionVocabulary(_Strict):
    """How a dataset's per-frame controls read: keyboard columns, mouse columns, signs and units.

    Keyboard columns named W, S, A, D drive the 81-class labels; columns named turn_left / turn_right (the
    Zelda layout) yaw by `turn_degrees` per frame; other columns are kept but ignored. Mouse values times
    `degrees_per_unit` are degrees per frame; `pitch_sign` -1 flips datasets whose positive pitch looks
    down. `translation_step` (world units per frame while a key is held) integrates poses for clips that
    come without any. `view: third`: the camera follows an avatar `orbit_distance` in front of it (turning
    orbits it), and labels follow the official tps rule (no translation class while the view turns).
    """

    keys: list[str] = Field(default_factory=lambda: ["W", "S", "A", "D"], min_length=1)
    mouse: list[Literal["pitch", "yaw"]] = Field(default_factory=lambda: ["pitch", "yaw"], max_length=2)
    pitch_sign: Literal[1, -1] = 1
    degrees_per_unit: float = Field(default=1.0, gt=0)
    translation_step: float = Field(default=0.08 / 4, gt=0)
    # A key counts as held above this value; the mouse moves above `mouse_threshold` units.
    key_threshold: float = 0.5
    mouse_threshold: float = Field(default=0.0, ge=0)
    turn_degrees: float = Field(default=0.75, gt=0)
    view: Literal["first", "third"] = "first"
    orbit_distance: float = Field(default=0.5, gt=0)

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError(f"keyboard columns must be unique, got {keys}")
        return keys


class SourceClip(_Strict):
    """One raw clip: a video plus per-frame actions and/or per-frame camera poses, and a prompt."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=120)
    video: str
    prompt: str = ""
    actions: str | None = None  # {"keyboard": [[...]], "mouse": [[...]]} or official per-frame actions
    poses: str | None = None  # official training pose JSON (per frame) or any `trajectories` format (per latent)
    split: Literal["train", "validation"] = "train"


class SourceManifest(_Strict):
    """`dataset.json` of a raw dataset directory (what `worldplay data synth` writes)."""

    version: Literal[1] = DATASET_VERSION
    fps: float = Field(gt=0)
    vocabulary: ActionVocabulary = Field(default_factory=ActionVocabulary)
    clips: list[SourceClip] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> SourceManifest:
        seen: set[str] = set()
        for clip in self.clips:
            if clip.id in seen:
                raise ValueError(f"clip id {clip.id!r} appears twice")
            seen.add(clip.id)
        return self


class PreparedClip(_Strict):
    id: str
    split: Literal["train", "validation"]
    shard: str
    prompt: str
    prompt_key: str
    num_frames: int = Field(gt=0)
    num_latents: int = Field(gt=0)
    labels_from: Literal["actions", "poses"]
    poses_from: Literal["poses", "actions"]


class RejectedClip(_Strict):
    id: str
    reason: str


class DatasetIndex(_Strict):
    """`index.json` of a prepared dataset: cached latents and condition states in safetensors shards."""

    version: Literal[1] = DATASET_VERSION
    complete: bool = False
    fps: float
    width: int
    height: int
    latent_channels: int
    scaling_factor: float
    vocabulary: ActionVocabulary
    model_dir: str
    clips: list[PreparedClip] = Field(default_factory=list)
    rejected: list[RejectedClip] = Field(default_factory=list)


def load_source_manifest(path: str | Path) -> SourceManifest:
    """`SRC/dataset.json` (or the file itself), validated; BadInput names the first problem."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    return _load_json_model(SourceManifest, path, "dataset manifest")


def load_dataset_index(path: str | Path) -> DatasetIndex:
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    return _load_json_model(DatasetIndex, path, "prepared dataset index", "run `worldplay data prepare` first")


def _load_json_model(model, path: Path, what: str, hint: str | None = None):
    import json

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"no {what} at {path}", hint or "check the path (see docs/training.md for the layout)") from None
    except json.JSONDecodeError as error:
        raise BadInput(
            f"cannot read {what} {path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}",
            "fix the JSON syntax there",
        ) from None
    except (OSError, UnicodeDecodeError, RecursionError) as error:
        raise BadInput(
            f"cannot read {what} {path}: {getattr(error, 'strerror', None) or error}",
            "check the file (see docs/training.md)",
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadInput(f"{path}: {first_error(error)}", "see docs/training.md for the format") from None


# --- the training config ---------------------------------------------------------------------------------


class ModelSection(_Strict):
    model_dir: str
    # Initial weights: an action checkpoint of the model directory, the base weights (action parameters
    # zero, as the official add_action_parameters leaves them) or a safetensors path.
    init: str = "ar"
    attention_backend: Literal["auto", "flash", "sdpa"] = "auto"


class MixedDataset(_Strict):
    """One dataset of a mix: a prepared dataset directory, its share of the samples (weights are relative)
    and whether it is streamed (its shards read one at a time, in a seeded order, never its index.json)."""

    path: str
    weight: float = Field(default=1.0, gt=0)
    streaming: bool = False


class CurriculumStage(_Strict):
    """From `step` on, samples hold `window_latents` latents (a length curriculum)."""

    step: int = Field(ge=0)
    window_latents: int = Field(ge=1)


def parse_curriculum(text: str) -> list[CurriculumStage]:
    """`"0:8,500:16"`: STEP:WINDOW_LATENTS items."""
    stages = []
    for item in (part.strip() for part in text.split(",")):
        step, separator, window = item.partition(":")
        if not separator or not step.strip().isdigit() or not window.strip().isdigit():
            raise ValueError(f"curriculum item {item!r} is not STEP:WINDOW_LATENTS")
        stages.append(CurriculumStage(step=int(step), window_latents=int(window)))
    return stages


MAX_MIXED_DATASETS = 16


class DataSection(_Strict):
    # The dataset validation reads (and the negative prompt); also the training data unless `mix` is given.
    path: str
    # Text CFG dropout: this share of samples trains on the negative (empty) prompt.
    cfg_dropout: float = Field(default=0.1, ge=0, le=1)
    batch_size: int = Field(default=1, ge=1)
    # Train on `path` streamed from its shards (datasets too large to index in memory).
    streaming: bool = False
    # Train on these datasets instead, each drawn with its weight's share (deterministic by the run seed).
    mix: list[MixedDataset] = Field(default_factory=list, max_length=MAX_MIXED_DATASETS)
    # Window length over steps (ar and bi methods): "0:8,500:16" or [{step, window_latents}]; the method's
    # window_latents is the longest a sample may hold.
    curriculum: list[CurriculumStage] | None = None

    @field_validator("curriculum", mode="before")
    @classmethod
    def _compact_curriculum(cls, value: Any) -> Any:
        return parse_curriculum(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ordered(self) -> DataSection:
        stages = self.curriculum or []
        if stages and stages[0].step != 0:
            raise ValueError("the curriculum's first stage must start at step 0")
        if any(later.step <= earlier.step for earlier, later in zip(stages, stages[1:])):
            raise ValueError("curriculum steps must increase")
        return self

    def curriculum_window(self, step: int, longest: int) -> int:
        """The window of samples drawn at `step` (`longest` without a curriculum)."""
        window = longest
        for stage in self.curriculum or []:
            if stage.step <= step:
                window = stage.window_latents
        return window


class TimestepSampling(_Strict):
    weighting: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(default=1.0, gt=0)
    shift: float = Field(default=3.0, gt=0)


class AttentionWindowKeys(_Strict):
    """Attention sink + local window of the AR model (both or neither; whole chunks): a chunk attends to
    the first `sink_latents` latents and the latest `local_window_latents - sink_latents` (itself included),
    in training (the chunk-causal block mask) and in the student's rollouts (its rebuilt context)."""

    sink_latents: int | None = Field(default=None, ge=0)
    local_window_latents: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _window_fits(self):
        sink, local = self.sink_latents, self.local_window_latents
        if (sink is None) != (local is None):
            raise ValueError("set both sink_latents and local_window_latents, or neither")
        if sink is not None:
            chunk = self.chunk_latents
            if sink % chunk or local % chunk or not sink < local:
                raise ValueError(
                    f"sink_latents {sink} < local_window_latents {local} must both be whole {chunk}-latent chunks"
                )
        return self


class ARMethod(AttentionWindowKeys):
    """Chunk-causal AR training with per-chunk noise and memory samples (the official HY recipe)."""

    name: Literal["ar"] = "ar"
    chunk_latents: int = Field(default=4, ge=1)
    window_latents: int = Field(default=24, ge=1)
    # The memory part of a memory sample: temporal context (latest chunks) + spatial memory (first chunk
    # plus retrieved clips) = window_latents - chunk_latents.
    context_latents: int = Field(default=12, ge=0)
    memory_probability: float = Field(default=0.8, ge=0, le=1)
    memory_points: int = Field(default=50_000, ge=100)
    # History chunks of memory samples are noised to t in [low, high] (official: 16..500).
    history_timesteps: tuple[int, int] = (16, 500)
    timesteps: TimestepSampling = Field(default_factory=TimestepSampling)

    @model_validator(mode="after")
    def _chunks_fit(self) -> ARMethod:
        if self.window_latents % self.chunk_latents:
            raise ValueError(
                f"window_latents {self.window_latents} is not a multiple of chunk_latents {self.chunk_latents}"
            )
        if self.window_latents < 2 * self.chunk_latents:
            raise ValueError("window_latents must hold at least two chunks (context and target)")
        memory = self.window_latents - self.chunk_latents
        if self.memory_probability > 0:
            if self.chunk_latents != 4:
                raise ValueError("memory samples retrieve 4-latent clips; use chunk_latents 4 or memory_probability 0")
            if self.context_latents % self.chunk_latents or not 0 < self.context_latents < memory:
                raise ValueError(
                    f"context_latents {self.context_latents} must be a positive multiple of chunk_latents below "
                    f"the {memory} memory latents"
                )
        if self.sink_latents is not None and self.memory_probability > 0:
            raise ValueError(
                "memory samples gather retrieved latents; use memory_probability 0 with an attention window"
            )
        low, high = self.history_timesteps
        if not 0 < low <= high <= 1000:
            raise ValueError(
                f"history_timesteps must satisfy 0 < low <= high <= 1000, got {list(self.history_timesteps)}"
            )
        return self

    @property
    def memory_latents(self) -> int:
        return self.window_latents - self.chunk_latents


class BiMethod(_Strict):
    """Flow-matching action fine-tuning of the bidirectional model: one noise level per clip window."""

    name: Literal["bi"] = "bi"
    window_latents: int = Field(default=16, ge=1)
    timesteps: TimestepSampling = Field(default_factory=TimestepSampling)


class ScoreNetwork(_Strict):
    """A frozen or trainable score network of distillation: which weights it starts from and how it attends.

    `init`: an action checkpoint of the model directory (`bi`, `ar`, ...) or a safetensors path.
    `attention`: `bidirectional` scores a window with `forward_bi` (the bidirectional model, the upstream
    teacher); `chunk_causal` scores it with `forward_chunk_causal` (an AR model: chunk i sees chunks 0..i).
    """

    init: str = "bi"
    attention: Literal["bidirectional", "chunk_causal"] = "bidirectional"


class TeacherSection(ScoreNetwork):
    """The real score. `sampling_steps` and `guidance` are how validation samples it for teacher agreement
    (the student's few-step output against the teacher's many-step output from the same noise)."""

    sampling_steps: int = Field(default=50, ge=1)
    guidance: float = Field(default=6.0, ge=1)


class CriticSection(ScoreNetwork):
    """The fake score (critic): initialised like the teacher by default, trained by flow matching with its
    own AdamW (upstream `fake_score_learning_rate`, `fake_score_betas`, `fake_score_lr_scheduler`)."""

    init: str | None = None  # None: the teacher's init
    attention: Literal["bidirectional", "chunk_causal"] | None = None  # None: the teacher's attention
    learning_rate: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float | None = Field(default=1.0, gt=0)


class SelfForcingMethod(AttentionWindowKeys):
    """Self-Forcing DMD2 (fact sheet §3.0-3.1): the AR student rolls out `window_latents` from noise chunk by
    chunk with its own context cache; a frozen teacher (real score) and a critic (fake score) score the clip.

    The keys keep their upstream names where they exist; the score-timestep clamp
    (`min_timestep_ratio`/`max_timestep_ratio`) is honoured, unlike upstream's SelfForcingMethod.
    """

    name: Literal["self_forcing"] = "self_forcing"
    rollout_mode: Literal["simulate"] = "simulate"
    chunk_latents: int = Field(default=4, ge=1)
    window_latents: int = Field(default=12, ge=1)
    # Student timesteps (0..1000); warped through the shift-`flow_shift` schedule they are the 4-step
    # schedule `ar-distilled` runs at inference: [1000, 937.5, 833.3, 625].
    denoising_steps: list[float] = Field(default_factory=lambda: [1000.0, 750.0, 500.0, 250.0], min_length=1)
    warp_denoising_step: bool = True
    flow_shift: float = Field(default=5.0, gt=0)
    student_sample_type: Literal["sde", "ode"] = "sde"
    same_step_across_blocks: bool = False
    last_step_only: bool = False
    start_gradient_frame: int = Field(default=0, ge=0)
    # The student's context K/V pass: outputs re-noised to t = context_noise (0: clean), conditioned on
    # the inference context timestep (14) like every AR context pass.
    context_noise: float = Field(default=0.0, ge=0, lt=1000)
    generator_update_interval: int = Field(default=1, ge=1)
    real_score_guidance_scale: float = Field(default=1.0, ge=1)
    min_timestep_ratio: float = Field(default=0.0, ge=0, le=1)
    max_timestep_ratio: float = Field(default=1.0, ge=0, le=1)
    memory_points: int = Field(default=50_000, ge=100)
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    critic: CriticSection

    @model_validator(mode="after")
    def _consistent(self) -> SelfForcingMethod:
        if self.window_latents % self.chunk_latents:
            raise ValueError(
                f"window_latents {self.window_latents} is not a multiple of chunk_latents {self.chunk_latents}"
            )
        if self.min_timestep_ratio > self.max_timestep_ratio:
            raise ValueError("min_timestep_ratio must not exceed max_timestep_ratio")
        if any(not 0 < step <= 1000 for step in self.denoising_steps):
            raise ValueError(f"denoising_steps must lie in (0, 1000], got {self.denoising_steps}")
        if any(a <= b for a, b in zip(self.denoising_steps, self.denoising_steps[1:])):
            raise ValueError(f"denoising_steps must decrease, got {self.denoising_steps}")
        return self

    @property
    def critic_init(self) -> str:
        return self.critic.init or self.teacher.init

    @property
    def critic_attention(self) -> str:
        return self.critic.attention or self.teacher.attention


class ContextForcingMethod(SelfForcingMethod):
    """Context forcing (WorldPlay paper; no public code, fact sheet §3.5, our design in docs/training.md):
    the student rolls out `window_latents` with its reconstituted memory; its last `score_chunks` chunks
    are scored by the teacher and the critic conditioned on the same memory the student used (the union of
    those chunks' contexts, minus the chunks), clean at `context_timestep`, at contiguous RoPE positions."""

    name: Literal["context_forcing"] = "context_forcing"  # type: ignore[assignment]
    score_chunks: int = Field(default=1, ge=1)
    context_timestep: float = Field(default=14.0, ge=0, lt=1000)

    @model_validator(mode="after")
    def _scored_fit(self) -> ContextForcingMethod:
        if self.score_chunks * self.chunk_latents >= self.window_latents:
            raise ValueError("score_chunks must leave at least one chunk of the window as memory")
        return self


STREAMING_STAGE_NAMES = ("streaming_long", "long", "streaming")


class DistillStage(_Strict):
    """One stage of `multi_phased_distill_schedule`: iterations [start_step, end_step) train `num_latent_t`
    latents, by plain self-forcing or, when streaming, by streaming sequences of that length (or of the
    stage's `streaming_max_length`); the stage's streaming keys override the method's."""

    stage: str = "stage"
    start_step: int = Field(ge=0)
    end_step: int = Field(ge=1)
    num_latent_t: int = Field(ge=1)
    streaming_training: bool = False
    streaming_chunk_size: int | None = Field(default=None, ge=1)
    streaming_max_length: int | None = Field(default=None, ge=1)
    streaming_min_new_frame: int | None = Field(default=None, ge=1)
    streaming_fixed_overlap_latents: int | None = Field(default=None, ge=0)

    @property
    def streaming(self) -> bool:
        return self.streaming_training or self.stage in STREAMING_STAGE_NAMES

    @property
    def length(self) -> int:
        """Latents of the stage's rollout (plain) or streamed sequence (streaming)."""
        return (self.streaming_max_length or self.num_latent_t) if self.streaming else self.num_latent_t


def parse_compact_schedule(text: str) -> list[DistillStage]:
    """`"700:21,3000:240"` (`end:T` or `start:end:T` items): the first stage is plain self-forcing, later ones
    stream; a stage without a start begins where the previous one ended."""
    stages: list[DistillStage] = []
    for position, item in enumerate(part.strip() for part in text.split(",")):
        fields_ = item.split(":")
        try:
            numbers = [int(field) for field in fields_]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3):
            raise ValueError(f"schedule item {item!r} is not END:LATENTS or START:END:LATENTS")
        start = numbers[0] if len(numbers) == 3 else (stages[-1].end_step if stages else 0)
        streaming = position > 0
        stages.append(
            DistillStage(
                stage="streaming_long" if streaming else "self_forcing",
                start_step=start,
                end_step=numbers[-2],
                num_latent_t=numbers[-1],
                streaming_training=streaming,
            )
        )
    return stages


class StreamingLongTuningMethod(SelfForcingMethod):
    """Streaming long tuning (fact sheet §3.3, LongLive-style): the student streams long sequences with its
    own persistent state across iterations; the teacher and critic score only the newest window of
    `streaming_chunk_size` latents, whose first `overlap` latents are history (masked out of both losses)."""

    name: Literal["streaming_long_tuning"] = "streaming_long_tuning"  # type: ignore[assignment]
    multi_phased_distill_schedule: str | list[DistillStage] | None = None
    streaming_chunk_size: int = Field(default=12, ge=1)
    streaming_max_length: int | None = Field(default=None, ge=1)
    streaming_fixed_overlap_latents: int | None = Field(default=4, ge=0)
    streaming_min_new_frame: int | None = Field(default=None, ge=1)
    streaming_reencode_overlap_anchor: bool = True
    streaming_anchor_inject_k: int = Field(default=1, ge=1)
    # new frames are always whole chunks of the AR student (a partial chunk is not something it generates)
    streaming_require_full_blocks: Literal[True] = True

    @field_validator("multi_phased_distill_schedule", mode="before")
    @classmethod
    def _compact(cls, value: Any) -> Any:
        return parse_compact_schedule(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _stages_fit(self) -> StreamingLongTuningMethod:
        stages = self.stages
        for previous, stage in zip(stages, stages[1:]):
            if stage.start_step < previous.end_step:
                raise ValueError(f"stage {stage.stage!r} starts before stage {previous.stage!r} ends")
        for stage in stages:
            if stage.end_step <= stage.start_step:
                raise ValueError(f"stage {stage.stage!r} ends at or before its start")
            if stage.length > self.window_latents:
                raise ValueError(
                    f"stage {stage.stage!r} needs {stage.length} latents but window_latents is {self.window_latents}"
                )
            if stage.length % self.chunk_latents:
                raise ValueError(f"stage {stage.stage!r}: {stage.length} latents are not whole chunks")
            if stage.streaming:
                self.window_settings(stage)
        return self

    @property
    def stages(self) -> list[DistillStage]:
        if self.multi_phased_distill_schedule:
            return list(self.multi_phased_distill_schedule)
        length = self.streaming_max_length or self.window_latents
        return [DistillStage(stage="streaming_long", start_step=0, end_step=1, num_latent_t=length)]

    def window_settings(self, stage: DistillStage) -> tuple[int, int | None, int | None]:
        """(score-window latents, fixed overlap, min new latents) of a streaming stage, checked."""
        window = stage.streaming_chunk_size or self.streaming_chunk_size
        overlap = stage.streaming_fixed_overlap_latents
        if overlap is None:
            overlap = self.streaming_fixed_overlap_latents
        min_new = stage.streaming_min_new_frame or self.streaming_min_new_frame
        chunk = self.chunk_latents
        if window % chunk or window > stage.length:
            raise ValueError(f"score window {window} must be whole chunks of {chunk} and at most {stage.length}")
        if overlap is not None:
            if not 0 <= overlap < window or (window - overlap) % chunk:
                raise ValueError(f"overlap {overlap} must leave whole chunks of new latents in the {window} window")
        elif min_new is None or min_new % chunk or not 0 < min_new < window:
            raise ValueError("without a fixed overlap, streaming_min_new_frame must be whole chunks below the window")
        # the anchor replaces history latents only: the overlap (at least a chunk when drawn) must hold it
        if self.streaming_reencode_overlap_anchor and self.streaming_anchor_inject_k > (overlap or chunk):
            raise ValueError(f"streaming_anchor_inject_k must be at most the overlap ({overlap or chunk})")
        return window, overlap, min_new


def _method_name(value: Any) -> str | None:
    # a method section without a name is the default (AR) method, so `--set method.window_latents=8` works
    if isinstance(value, dict):
        return value.get("name", "ar")
    return getattr(value, "name", None)


Method = Annotated[
    Union[
        Annotated[ARMethod, Tag("ar")],
        Annotated[BiMethod, Tag("bi")],
        Annotated[SelfForcingMethod, Tag("self_forcing")],
        Annotated[StreamingLongTuningMethod, Tag("streaming_long_tuning")],
        Annotated[ContextForcingMethod, Tag("context_forcing")],
    ],
    Discriminator(_method_name),
]


class OptimizerSection(_Strict):
    learning_rate: float = Field(default=1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=1e-4, ge=0)
    eps: float = Field(default=1e-8, gt=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    # The official trainer skips steps whose grad norm is >= 10; off unless asked for.
    skip_grad_norm_above: float | None = Field(default=None, gt=0)


class LoRASection(_Strict):
    rank: int = Field(default=16, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    # Name patterns (fnmatch) of the Linear layers that get adapters.
    targets: list[str] = Field(
        default_factory=lambda: [
            "double_blocks.*.img_attn_[qkv]",
            "double_blocks.*.img_attn_proj",
            "double_blocks.*.img_attn_prope_proj",
        ],
        min_length=1,
    )


class EMASection(_Strict):
    decay: float = Field(default=0.99, gt=0, lt=1)
    start_step: int = Field(default=0, ge=0)


class CheckpointSection(_Strict):
    output_dir: str
    every_steps: int = Field(default=500, ge=1)
    keep_last: int | None = Field(default=2, ge=1)


class ValidationSection(_Strict):
    every_steps: int = Field(default=500, ge=1)
    run_at_start: bool = True
    max_clips: int = Field(default=4, ge=1)
    num_latents: int | None = Field(default=None, ge=1)
    sampling_steps: int = Field(default=20, ge=1)
    shift: float = Field(default=5.0, gt=0)
    guidance: float = Field(default=1.0, ge=1)
    seed: int = 0
    hud: bool = True
    # drift: how the last chunk's look departs from the first's (docs/training.md); teacher_agreement:
    # the student against its teacher from the same noise (distillation methods only)
    metrics: list[Literal["psnr", "ssim", "action_following", "control_loss", "drift", "teacher_agreement"]] = Field(
        default_factory=lambda: ["psnr", "ssim", "action_following", "control_loss", "drift"]
    )


class LoggingSection(_Strict):
    every_steps: int = Field(default=10, ge=1)
    tensorboard: Literal["auto", "on", "off"] = "auto"
    # Weights & Biases beside TensorBoard: off by default; `wandb` is imported (and the network used, per
    # its WANDB_MODE) only when on
    wandb: bool = False
    wandb_project: str = "worldplay"
    wandb_run_name: str | None = None


class TrainConfig(_Strict):
    version: Literal[1] = CONFIG_VERSION
    model: ModelSection
    data: DataSection
    method: Method = Field(default_factory=ARMethod)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    max_steps: int = Field(ge=1)
    grad_accumulation: int = Field(default=1, ge=1)
    seed: int = 3208
    mixed_precision: Literal["no", "bf16"] = "no"
    gradient_checkpointing: bool = False
    fsdp: bool = False
    # Ulysses sequence parallelism: groups of `sp_size` ranks share each sample and split its image tokens
    # (the ranks form a dp x sp mesh; docs/training.md "Training at scale")
    sp_size: int = Field(default=1, ge=1)
    lora: LoRASection | None = None
    ema: EMASection | None = None
    checkpoint: CheckpointSection
    validation: ValidationSection | None = None
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @model_validator(mode="after")
    def _data_fits_the_method(self) -> TrainConfig:
        data, method = self.data, self.method
        streamed = data.streaming or any(entry.streaming for entry in data.mix)
        if (streamed or data.curriculum) and not isinstance(method, (ARMethod, BiMethod)):
            raise ValueError("data.streaming and data.curriculum serve the ar and bi methods")
        for stage in data.curriculum or []:
            if stage.window_latents > method.window_latents:
                raise ValueError(
                    f"curriculum window {stage.window_latents} exceeds method.window_latents {method.window_latents}"
                )
            try:
                type(method).model_validate({**method.model_dump(), "window_latents": stage.window_latents})
            except ValidationError as error:
                raise ValueError(f"curriculum window {stage.window_latents}: {first_error(error)}") from None
        return self

    @model_validator(mode="after")
    def _teacher_agreement_needs_a_teacher(self) -> TrainConfig:
        validation = self.validation
        if validation and "teacher_agreement" in validation.metrics and not isinstance(self.method, SelfForcingMethod):
            raise ValueError("validation metric teacher_agreement needs a distillation method (it has a teacher)")
        return self


TASK_TRAIN = specs.TASK_TRAIN  # named beside the allowlist, in contract.specs
DEFAULT_TRAIN_QUEUE = "train"
TRAIN_TIMEOUT_S = 30 * 24 * 3600


class TrainJobSpec(_Strict):
    """A `worldplay train --queue` job: the validated config (its output_dir is the job directory), an
    optional checkpoint to resume from and the number of processes (one per GPU)."""

    version: Literal[1] = CONFIG_VERSION
    kind: Literal["train"] = "train"
    config: TrainConfig
    resume: str | None = None
    gpus: int = Field(default=1, ge=1, le=64)
    timeout_s: int = Field(default=TRAIN_TIMEOUT_S, gt=0)

    @model_validator(mode="after")
    def _whole_sp_groups(self) -> TrainJobSpec:
        if self.gpus % self.config.sp_size:
            raise ValueError(f"gpus {self.gpus} is not a multiple of sp_size {self.config.sp_size}")
        return self

    # how `contract.queue.enqueue` puts it on a queue: a re-run after a lost worker resumes from the job's
    # newest checkpoint, behind the jobs already waiting
    task: ClassVar[str] = TASK_TRAIN
    rerun_first: ClassVar[bool] = False

    def summary(self, queue: str) -> dict:
        """What job listings show of a train job (the keys of `JobSpec.summary`)."""
        method = self.config.method
        return {
            "kind": "train",
            "engine": "native",
            "variant": method.name,
            "prompt": f"train {method.name} {self.config.max_steps} steps on {Path(self.config.data.path).name}",
            "frames": None,
            "width": None,
            "height": None,
            "output_name": None,
            "queue": queue,
        }

    def description(self) -> str:
        return self.summary("")["prompt"]


# --- loading with overrides ------------------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`a.b.c=value` items set nested keys; values are read as YAML (numbers, booleans, lists, null)."""
    import yaml

    for item in overrides:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise BadInput(f"override {item!r} is not KEY=VALUE", "e.g. --set optimizer.learning_rate=1e-5")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise BadInput(f"override {item!r}: cannot parse the value ({error})") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise BadInput(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def bundled_examples() -> dict[str, Path]:
    """The example configs shipped in the worker package (worker/training/configs), by name. Found without
    importing the package: the CLI never imports torch, and a CLI-only install has no examples."""
    import importlib.util

    spec = importlib.util.find_spec("worker")
    if spec is None or not spec.submodule_search_locations:
        return {}
    directory = Path(list(spec.submodule_search_locations)[0]) / "training" / "configs"
    return {path.stem: path for path in sorted(directory.glob("*.yaml"))}


def read_config_data(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        examples = ", ".join(bundled_examples())
        hint = f"give a YAML file or a bundled example: {examples}" if examples else None
        raise BadInput(f"no training config at {path}", hint) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
        raise BadInput(f"training config {path}: YAML error{where}: {problem}", "fix the YAML syntax there") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        detail = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise BadInput(
            f"cannot read training config {path}: {detail}", "check the file (see docs/training.md)"
        ) from None
    if not isinstance(data, dict):
        raise BadInput(
            f"training config {path} is not a mapping of sections", "start from a bundled example, e.g. tiny_synthetic"
        )
    return data


def load_train_config(target: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read YAML, apply dotted overrides, validate. `target` is a config file, whose relative paths resolve
    against its directory, or the name of a bundled example (`tiny_synthetic`), whose relative paths
    resolve against the current directory: the model, data and run directories are the user's, never the
    installed package's."""
    path = Path(target)
    examples = bundled_examples()
    if not path.is_file() and str(target) in examples:
        path, base = examples[str(target)], Path.cwd()
    else:
        base = path.parent
    data = apply_overrides(read_config_data(path), list(overrides))
    config = validate_config(data, str(path))
    return resolve_paths(config, base)


def validate_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise BadInput(f"{source}: {first_error(error)}", "see docs/training.md for every key") from None


def resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    def absolute(value: str) -> str:
        candidate = Path(value).expanduser()
        return str(candidate if candidate.is_absolute() else (base / candidate).resolve())

    def weights(init: str | None) -> str | None:
        return absolute(init) if init is not None and (init.endswith(".safetensors") or "/" in init) else init

    model = config.model.model_copy(
        update={"init": weights(config.model.init), "model_dir": absolute(config.model.model_dir)}
    )
    method = config.method
    if isinstance(method, SelfForcingMethod):
        method = method.model_copy(
            update={
                "teacher": method.teacher.model_copy(update={"init": weights(method.teacher.init)}),
                "critic": method.critic.model_copy(update={"init": weights(method.critic.init)}),
            }
        )
    return config.model_copy(
        update={
            "method": method,
            "model": model,
            "data": config.data.model_copy(
                update={
                    "path": absolute(config.data.path),
                    "mix": [entry.model_copy(update={"path": absolute(entry.path)}) for entry in config.data.mix],
                }
            ),
            "checkpoint": config.checkpoint.model_copy(update={"output_dir": absolute(config.checkpoint.output_dir)}),
        }
    )


def check_paths(config: TrainConfig) -> None:
    """The existence checks the CLI can make before starting or enqueueing (no torch needed)."""
    model_dir = Path(config.model.model_dir)
    if not model_dir.is_dir():
        raise BadInput(f"model directory {model_dir} does not exist", "run `worldplay download` or fix model.model_dir")
    transformer_config = f"{layout.TRANSFORMER_DIR}/{layout.CONFIG_NAME}"
    if not (model_dir / transformer_config).is_file():
        raise BadInput(f"{model_dir} has no {transformer_config}", "point model.model_dir at the official layout")
    if not (model_dir / layout.VAE_DIR).is_dir():
        raise BadInput(
            f"{model_dir} has no {layout.VAE_DIR}/ directory", "validation decodes with the model directory's VAE"
        )
    load_dataset_index(config.data.path)
    for entry in config.data.mix:
        # a streamed dataset may be too large to index; only its presence is checked here
        if not Path(entry.path).is_dir():
            raise BadInput(
                f"data.mix dataset {entry.path} does not exist", "run `worldplay data prepare` or fix data.mix"
            )
        if not entry.streaming:
            load_dataset_index(entry.path)
