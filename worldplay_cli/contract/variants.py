"""The model variants: one frozen record per variant, the one table every other module reads.

A record holds every fact about a variant that code elsewhere needs: the released name, the official
`--model_type` (which also picks the rollout), latents per denoising chunk, the official recipe (steps,
guidance; classifier-free guidance branches follow from the guidance), whether the official script
runs it `--few_step`, the folder of its action checkpoint in the model directory (and the file name
its Hub repository uses, when that differs), its download piece, where it stands in the order in
which `worldplay doctor` recommends variants, whether the 720p super-resolution stage can follow it, and
its model family.

A model family (`Family`, one record each in `FAMILIES`) holds what its variants share: whether a reference
image is required (the WAN family also generates text-to-video), the frame-size rule, the official script,
and the memory figures the memory profiles estimate with. The family also picks the worker's pipeline and the
model directory's sub-layout (`contract.layout`), each in one place.

Read by the CLI (settings, specs, submit, download catalog, doctor, dev) and by the worker (pipeline,
engines, checkpoint loading, memory profiles, doctor). Adding a variant is adding one `Variant` to
`BUILTIN` (or, for the duration of a test, `registered(record)`); nothing else lists variants.

Chunk sizes come from `trajectories.latents.CHUNK`: `trajectories` validates latent counts per model
on its own and may import nothing of ours, so it keeps the one chunk table and this registry reads it
(the only direction the import rules allow). `register` adds a new variant's chunk size there, so the
trajectory checks of this process accept it too.

This module imports `trajectories` only (no pydantic, no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from trajectories import latents

ModelType = Literal["bi", "ar"]
FamilyName = Literal["hunyuan", "wan"]
GB = 10**9


@dataclass(frozen=True)
class MemoryTraits:
    """What a family's memory-profile estimates are made of: bytes per GPU of the released model (bf16)."""

    transformer_params: int  # counted on the meta device from the released config
    streamed_transformer_bytes: int  # embedders, final layer and two blocks in flight (group offloading)
    encoder_bytes: int  # the condition encoders, used once per job
    vae_bytes: int
    vae_decode_bytes: int  # working set of one full-frame decode step
    vae_tiled_decode_bytes: int
    context_kv_bytes: int  # the context K/V of a full chunk's attention per guidance branch (splits over sp)
    activation_fixed_bytes: int
    activation_split_bytes: int  # activations that split over sp

    @property
    def transformer_bytes(self) -> int:
        return self.transformer_params * 2  # bf16


@dataclass(frozen=True)
class Family:
    """What every variant of one model family shares."""

    name: FamilyName
    title: str  # the base model
    image_required: bool  # False: without a reference image the family generates text-to-video
    size_multiple: int  # frame sides are multiples of this (VAE compression x patch size)
    default_size: tuple[int, int] | None  # (width, height) when none is given; None: the image's 480p bucket
    official_script: str  # what the official engine runs in a checkout
    memory: MemoryTraits
    attention_heads: int  # of the released transformer: a sequence-parallel degree must divide it
    sequence_parallel: bool = True  # the native pipeline can split one job over several GPUs
    live: bool = True  # its autoregressive variants serve live play sessions (`worldplay play`)
    guided: bool = True  # the native pipeline has classifier-free guidance (guidance > 1)

    def resolution(self, width: int, height: int) -> str | None:
        """What a job of `width` x `height` frames calls its resolution: None for a family sized by image buckets
        (the job names its bucket class, `contract.buckets.RESOLUTION_BASE`), else the short side ("704p")."""
        return None if self.default_size is None else f"{min(width, height)}p"

    def check_size(self, width: int, height: int) -> str | None:
        """None if frames of `width` x `height` can be generated, else the problem (one line)."""
        if width % self.size_multiple or height % self.size_multiple:
            return f"{self.title} needs frame sides that are multiples of {self.size_multiple}, got {width}x{height}"
        return None


FAMILIES: dict[str, Family] = {
    "hunyuan": Family(
        name="hunyuan",
        title="HunyuanVideo-1.5 (8.3B)",
        image_required=True,
        size_multiple=16,
        default_size=None,
        official_script="hyvideo/generate.py",
        attention_heads=16,
        # calibrated to the official README figures (AR distilled, 125 frames: 72 GB at sp=1, 34 GB at sp=4,
        # 28 GB at sp=8, offloading on): see worker/runtime/memory_profiles.py
        memory=MemoryTraits(
            transformer_params=8_557_933_856,
            streamed_transformer_bytes=int(1.1 * GB),
            encoder_bytes=int(18.6 * GB),  # Qwen2.5-VL-7B fp16 (~16.6 GB), byT5 + glyph fp32, SigLIP fp16
            vae_bytes=1 * GB,
            vae_decode_bytes=4 * GB,
            vae_tiled_decode_bytes=int(1.5 * GB),
            context_kv_bytes=int(27.6 * GB),
            activation_fixed_bytes=int(4.7 * GB),
            activation_split_bytes=int(22.3 * GB),
        ),
    ),
    "wan": Family(
        name="wan",
        title="Wan2.2-TI2V-5B",
        image_required=False,
        size_multiple=32,  # the Wan2.2 VAE compresses 16x, the transformer's patches are 2x2 latents
        default_size=(1280, 704),  # the official pipeline's only size
        official_script="wan/generate.py",
        attention_heads=24,
        guided=False,  # the WorldPlay WAN models run without CFG (the official guidance_scale=1.0)
        # estimates, not calibrated against a run: 5,293,225,152 parameters in bf16 (10.6 GB); the UMT5-XXL
        # encoder ~5.7B parameters in bf16 (~11.4 GB); the Wan2.2 VAE in bf16; the context K/V at 1280x704
        # (880 tokens per latent) of 16 context + 4 chunk latents: 30 blocks x (rope | camera) x (K, V) x
        # 17,600 tokens x 3072 x 2 bytes = 13.0 GB
        memory=MemoryTraits(
            transformer_params=5_293_225_152,
            streamed_transformer_bytes=int(0.8 * GB),
            encoder_bytes=int(11.4 * GB),
            vae_bytes=int(1.4 * GB),
            vae_decode_bytes=int(4 * GB),
            vae_tiled_decode_bytes=int(1.5 * GB),
            context_kv_bytes=int(13.0 * GB),
            activation_fixed_bytes=int(2 * GB),
            activation_split_bytes=int(6 * GB),
        ),
    ),
}


@dataclass(frozen=True)
class Variant:
    name: str  # what users type: `--variant ar-distilled`, `worldplay download ar-distilled`
    title: str  # the released model's name
    model_type: ModelType  # the official --model_type: bidirectional (bi_rollout) or autoregressive (ar_rollout)
    chunk_latents: int  # latents denoised per chunk
    steps: int  # the official recipe: denoising steps ...
    guidance: float  # ... and classifier-free guidance scale (1.0 = no CFG)
    action_dir: str  # folder of the action checkpoint inside the model directory
    piece_title: str  # what `worldplay download` calls its action-checkpoint piece
    few_step: bool = False  # run by the official script with `--few_step true`
    hub_weights_name: str | None = None  # the checkpoint's file name on the Hub when it is not the official one
    preference: int = 100  # doctor recommends the ready variant with the lowest value
    super_resolution: bool = True  # its 480p latents can feed the 720p SR stage (`contract.sr`)
    family_name: FamilyName = "hunyuan"
    checkpoint_name: str | None = None  # the checkpoint's file in `action_dir` when not the diffusers default

    @property
    def family(self) -> Family:
        return FAMILIES[self.family_name]

    @property
    def cfg_branches(self) -> int:
        """Separate guidance passes (each with its own context caches): 2 with CFG, else 1 (official: guidance > 1)."""
        return 2 if self.guidance > 1 else 1

    @property
    def plays_live(self) -> bool:
        """Whether `worldplay play` can run a session on it (an autoregressive variant of a live family)."""
        return self.model_type == "ar" and self.family.live

    @property
    def piece(self) -> str:
        """The `worldplay download` piece holding the action checkpoint."""
        return f"action-{self.name}"


BUILTIN: tuple[Variant, ...] = (
    Variant(
        name="bi",
        title="HY-World1.5-Bidirectional-480P-I2V",
        model_type="bi",
        chunk_latents=latents.CHUNK["bi"],
        steps=50,
        guidance=6.0,
        action_dir="bidirectional_model",
        piece_title="HY-World 1.5 bidirectional action model",
        preference=4,
    ),
    Variant(
        name="ar",
        title="HY-World1.5-Autoregressive-480P-I2V",
        model_type="ar",
        chunk_latents=latents.CHUNK["ar"],
        steps=50,
        guidance=6.0,
        action_dir="ar_model",
        piece_title="HY-World 1.5 autoregressive action model",
        preference=2,
    ),
    Variant(
        name="ar-rl",
        title="HY-World1.5-Autoregressive-480P-I2V-rl",
        model_type="ar",
        chunk_latents=latents.CHUNK["ar-rl"],
        steps=50,
        guidance=6.0,
        action_dir="ar_rl_model",
        piece_title="HY-World 1.5 autoregressive action model with RL post-training (WorldCompass)",
        preference=3,
    ),
    Variant(
        name="ar-distilled",
        title="HY-World1.5-Autoregressive-480P-I2V-distill",
        model_type="ar",
        chunk_latents=latents.CHUNK["ar-distilled"],
        steps=4,
        guidance=1.0,
        action_dir="ar_distilled_action_model",
        piece_title="HY-World 1.5 distilled autoregressive action model (4 steps)",
        few_step=True,
        hub_weights_name="model.safetensors",
        preference=1,
    ),
    Variant(
        name="wan-distilled",
        title="HY-WorldPlay WAN-5B distilled (wan_distilled_model)",
        model_type="ar",
        chunk_latents=latents.CHUNK["wan-distilled"],
        steps=4,
        guidance=1.0,
        action_dir="wan_distilled_model",
        piece_title="HY-WorldPlay WAN-5B distilled action model (4 steps, model.pt)",
        few_step=True,
        checkpoint_name="model.pt",
        preference=5,
        super_resolution=False,
        family_name="wan",
    ),
    Variant(
        name="wan-ar",
        title="HY-WorldPlay WAN-5B autoregressive (wan_transformer)",
        model_type="ar",
        chunk_latents=latents.CHUNK["wan-ar"],
        steps=50,
        guidance=1.0,
        action_dir="wan_transformer",
        piece_title="HY-WorldPlay WAN-5B autoregressive action model (wan_transformer)",
        checkpoint_name="diffusion_pytorch_model.safetensors",
        preference=6,
        super_resolution=False,
        family_name="wan",
    ),
)
DEFAULT = "ar-distilled"  # the settings' default_variant (the fastest)

_REGISTRY: dict[str, Variant] = {}


class UnknownVariant(KeyError):
    def __init__(self, name: object):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown variant {self.name!r}; use one of: {', '.join(names())}"


def register(record: Variant) -> Variant:
    """Add a variant (refused if the name is taken); its chunk size becomes known to `trajectories` too."""
    if record.name in _REGISTRY:
        raise ValueError(f"variant {record.name!r} is already registered")
    known = latents.CHUNK.get(record.name)
    if known is not None and known != record.chunk_latents:
        raise ValueError(
            f"variant {record.name!r}: trajectories says {known} latents per chunk, the record {record.chunk_latents}"
        )
    if known is None:
        latents.register_model(record.name, record.chunk_latents)
    _REGISTRY[record.name] = record
    return record


def unregister(name: str) -> None:
    """Remove a variant added by `register` (the built-in ones stay)."""
    if any(record.name == name for record in BUILTIN):
        raise ValueError(f"variant {name!r} is built in")
    _REGISTRY.pop(name)
    latents.unregister_model(name)


@contextmanager
def registered(record: Variant) -> Iterator[Variant]:
    """`record` is a variant for the duration of the block (tests: adding a variant is one record)."""
    register(record)
    try:
        yield record
    finally:
        unregister(record.name)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def all_variants() -> tuple[Variant, ...]:
    return tuple(_REGISTRY.values())


def find(name: object) -> Variant | None:
    return _REGISTRY.get(name) if isinstance(name, str) else None


def get(name: object) -> Variant:
    """The record of `name`; `UnknownVariant` (a KeyError naming the valid ones) otherwise."""
    record = find(name)
    if record is None:
        raise UnknownVariant(name)
    return record


def by_preference() -> tuple[Variant, ...]:
    """Every variant, the one doctor recommends first."""
    return tuple(sorted(_REGISTRY.values(), key=lambda record: record.preference))


def check_name(name: str) -> str:
    """Pydantic validator for a variant field: the name if registered, else a ValueError listing the valid ones."""
    if find(name) is None:
        raise ValueError(f"unknown variant {name!r}; use one of: {', '.join(names())}")
    return name


class _View(Mapping):
    """name -> value(record): a live view of the registry for readers that want a mapping."""

    def __init__(self, value: Callable[[Variant], object]):
        self._value = value

    def __getitem__(self, name: str):
        record = find(name)
        if record is None:
            raise KeyError(name)
        return self._value(record)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(_REGISTRY)


def view(value: Callable[[Variant], object]) -> Mapping:
    """A live mapping name -> value(record), e.g. `view(lambda record: record.action_dir)`."""
    return _View(value)


RECIPES: Mapping[str, dict[str, float | int]] = view(
    lambda record: {"steps": record.steps, "guidance": record.guidance}
)

for _record in BUILTIN:
    register(_record)
