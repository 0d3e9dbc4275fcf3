"""The model variants: one frozen record per variant, the one table every other module reads.

A record holds every fact about a variant that code elsewhere needs: the released name, the official
`--model_type` (which also picks the rollout), latents per denoising chunk, the official recipe (steps,
guidance; classifier-free guidance branches follow from the guidance), whether the official script
runs it `--few_step`, the folder of its action checkpoint in the model directory (and the file name
its Hub repository uses, when that differs), its download piece, where it stands in the order in
which `worldplay doctor` recommends variants, and whether the 720p super-resolution stage can follow it.

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

    @property
    def cfg_branches(self) -> int:
        """Separate guidance passes (each with its own context caches): 2 with CFG, else 1 (official: guidance > 1)."""
        return 2 if self.guidance > 1 else 1

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
