"""What each variant needs: pieces (one repository each, filtered by patterns) and where they land.

Paths in the official layout are relative to the model directory (the HunyuanVideo-1.5 root). The
action checkpoints live inside it too, each as `<folder>/diffusion_pytorch_model.safetensors`, so one
directory holds everything a variant needs. The WAN family's pieces (the Wan2.2-TI2V-5B diffusers base and
the WorldPlay WAN folders) land in the same root under their own names (`contract.layout`). Live sizes come from the Hub at plan time (or from the
manifest / cache when offline); `KNOWN_SIZES` is only the fallback that lets a plan be made with neither.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from worldplay_cli.contract import layout, sr, variants
from worldplay_cli.contract.errors import BadInput

Source = Literal["huggingface", "modelscope"]


class Piece(BaseModel):
    """One repository (or a filtered part of it) placed under `target` in the layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    source: Source = "huggingface"
    repo: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] = ()
    target: str = ""
    # repo path -> layout path (relative to `target`) for files the official loader expects renamed.
    renames: dict[str, str] = {}
    gated: bool = False

    def layout_path(self, repo_path: str) -> str:
        relative = self.renames.get(repo_path, repo_path)
        return f"{self.target}/{relative}" if self.target else relative

    def wanted(self, paths) -> list[str]:
        """The repo paths this piece takes, by its allow/ignore patterns (huggingface_hub's fnmatch rules)."""
        from huggingface_hub.utils import filter_repo_objects

        return sorted(
            filter_repo_objects(
                list(paths),
                allow_patterns=list(self.allow_patterns or []) or None,
                ignore_patterns=list(self.ignore_patterns) or None,
            )
        )

    @property
    def web_url(self) -> str:
        if self.source == "modelscope":
            return f"https://www.modelscope.cn/models/{self.repo}"
        return f"https://huggingface.co/{self.repo}"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    pieces: tuple[str, ...] = ()
    action_checkpoint: str | None = None
    released: bool = True
    note: str = ""


class _Live(Mapping):
    """A mapping rebuilt from contract.variants on every read, so a variant registered later shows up."""

    def __init__(self, build: Callable[[], dict]):
        self._build = build

    def __getitem__(self, name):
        return self._build()[name]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


_HV_REPO = "tencent/HunyuanVideo-1.5"
_WP_REPO = "tencent/HY-WorldPlay"

_SHARED_PIECES: tuple[Piece, ...] = (
    Piece(
        name="hunyuanvideo-480p-i2v",
        title="HunyuanVideo-1.5 VAE, scheduler and 480p I2V transformer",
        repo=_HV_REPO,
        allow_patterns=(f"{layout.VAE_DIR}/*", f"{layout.SCHEDULER_DIR}/*", f"{layout.TRANSFORMER_DIR}/*"),
    ),
    Piece(
        name="hunyuanvideo-sr",
        title="HunyuanVideo-1.5 720p super-resolution transformer and upsampler",
        repo=_HV_REPO,
        allow_patterns=(f"{layout.SR_TRANSFORMER_DIR}/*", f"{layout.SR_UPSAMPLER_DIR}/*"),
    ),
    Piece(
        name="qwen2.5-vl",
        title="Qwen2.5-VL-7B-Instruct text encoder",
        repo="Qwen/Qwen2.5-VL-7B-Instruct",
        target=layout.LLM_DIR,
    ),
    Piece(
        name="byt5-small",
        title="ByT5-small glyph text encoder",
        repo="google/byt5-small",
        # TensorFlow/Flax/Rust copies of the same weights are never loaded.
        ignore_patterns=("*.h5", "*.msgpack", "*.ot", "onnx/*"),
        target=layout.BYT5_DIR,
    ),
    Piece(
        name="glyph-sdxl-v2",
        title="Glyph-SDXL-v2 ByT5 weights and glyph vocabularies (ModelScope)",
        source="modelscope",
        repo="AI-ModelScope/Glyph-SDXL-v2",
        revision="master",
        allow_patterns=(
            layout.GLYPH_COLORS,
            layout.GLYPH_FONTS,
            layout.GLYPH_CHECKPOINT,
        ),
        target=layout.GLYPH_DIR,
    ),
    Piece(
        name="siglip",
        title="SigLIP vision encoder from FLUX.1-Redux-dev",
        repo="black-forest-labs/FLUX.1-Redux-dev",
        # Only these two subfolders are loaded; the Redux adapter itself is not used.
        allow_patterns=(f"{layout.SIGLIP_MODEL_DIR}/*", f"{layout.SIGLIP_PROCESSOR_DIR}/*"),
        target=layout.SIGLIP_DIR,
        gated=True,
    ),
    Piece(
        name=layout.WAN_BASE_PIECE,
        title="Wan2.2-TI2V-5B VAE, UMT5-XXL text encoder, tokenizer and scheduler (diffusers)",
        repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        # the base transformer is never loaded: every WAN checkpoint is a full state dict
        allow_patterns=("model_index.json", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"),
        target=layout.WAN_BASE_DIR,
    ),
    Piece(
        name=layout.WAN_CONFIG_PIECE,
        title="HY-WorldPlay WAN-5B transformer config",
        repo=_WP_REPO,
        allow_patterns=(f"{layout.WAN_TRANSFORMER_DIR}/{layout.CONFIG_NAME}",),
    ),
)


def _action_piece(record: variants.Variant) -> Piece:
    """The piece of a variant's action checkpoint: its folder of the WorldPlay repository."""
    renames = {}
    if record.hub_weights_name:  # the official loader reads the official name
        renames = {f"{record.action_dir}/{record.hub_weights_name}": layout.action_checkpoint(record.name)}
    # a record naming its checkpoint file takes that file (and its shards) only, e.g. not the WAN config
    # beside the wan-ar weights, which is a piece of its own
    stem = record.checkpoint_name.split(".")[0] + "*" if record.checkpoint_name else "*"
    return Piece(
        name=record.piece,
        title=record.piece_title,
        repo=_WP_REPO,
        allow_patterns=(f"{record.action_dir}/{stem}",),
        renames=renames,
    )


def _pieces() -> dict[str, Piece]:
    pieces = (*_SHARED_PIECES, *(_action_piece(record) for record in variants.all_variants()))
    return {piece.name: piece for piece in pieces}


PIECES: Mapping[str, Piece] = _Live(_pieces)


class KnownSize(BaseModel):
    """A piece's size as far as worldplay knows it without asking the hub, and where that figure comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int
    basis: str


# Used only when a plan cannot ask the hub (offline with nothing cached, or the hub unreachable); the plan then
# says its sizes are these. None is a published byte count: worldplay's reference has the parameter counts, not
# the Hub listings, so each figure is computed or estimated and says how. Replace one with the Hub's total when known.
_SHARED_SIZES: dict[str, KnownSize] = {
    "hunyuanvideo-480p-i2v": KnownSize(
        size=17_200_000_000,
        basis="approximate: the 480p I2V transformer's 8.33 B parameters in bf16 (16.7 GB) plus the VAE and scheduler",
    ),
    "hunyuanvideo-sr": KnownSize(
        size=17_200_000_000,
        basis="approximate: the SR transformer has the same 8.33 B-parameter architecture (16.7 GB in bf16), "
        "plus the upsampler",
    ),
    "qwen2.5-vl": KnownSize(
        size=16_600_000_000,
        basis="approximate: 8.3 B parameters in bf16; the official download script says ~15GB",
    ),
    "byt5-small": KnownSize(size=1_200_000_000, basis="approximate: 300 M parameters in fp32 (pytorch_model.bin)"),
    "glyph-sdxl-v2": KnownSize(
        size=900_000_000,
        basis="approximate: a ByT5-small encoder checkpoint in fp32 plus two small JSON files",
    ),
    "siglip": KnownSize(size=860_000_000, basis="approximate: SigLIP so400m, 428 M parameters in bf16"),
    layout.WAN_BASE_PIECE: KnownSize(
        size=13_000_000_000,
        basis="approximate: the UMT5-XXL encoder (~5.7 B parameters) in bf16 (~11.4 GB) plus the Wan2.2 VAE",
    ),
    layout.WAN_CONFIG_PIECE: KnownSize(size=2_000, basis="approximate: one small JSON file"),
}
# every action checkpoint: a full state dict of the released architecture
_ACTION_SIZE = KnownSize(
    size=17_100_000_000, basis="approximate: 8,557,933,856 parameters (base plus action layers) in bf16"
)
# a WAN checkpoint: 5,293,225,152 parameters (the fact sheet's count), bf16 for the safetensors of wan-ar;
# the distilled model.pt is a training checkpoint whose dtype is not known here: bf16 assumed
_WAN_ACTION_SIZE = KnownSize(
    size=10_600_000_000, basis="approximate: 5,293,225,152 parameters (Wan2.2-TI2V-5B plus action layers) in bf16"
)
_FAMILY_ACTION_SIZES = {"hunyuan": _ACTION_SIZE, "wan": _WAN_ACTION_SIZE}
KNOWN_SIZES: Mapping[str, KnownSize] = _Live(
    lambda: {
        **_SHARED_SIZES,
        **{record.piece: _FAMILY_ACTION_SIZES[record.family_name] for record in variants.all_variants()},
    }
)

# Download-only entries beside the variants of contract.variants: the SR add-on (`_sr_addon`, which names
# the variants whose records say the SR stage can follow them) and an announced variant.
_EXTRAS: tuple[Variant, ...] = (
    Variant(
        name="ar-rl-distilled",
        title="HY-World1.5-Autoregressive-480P-I2V-rl-distill",
        released=False,
        note="announced by Tencent as 'to be released'; no weights are published yet",
    ),
)


def _sr_addon() -> Variant:
    able = [record.name for record in variants.all_variants() if record.super_resolution]
    return Variant(
        name=sr.DOWNLOAD_PIECE,
        title="720p super-resolution stage (optional add-on)",
        pieces=("hunyuanvideo-sr",),
        note=f"add-on for `generate --sr` with {', '.join(able)}: download it together with a variant, "
        f"e.g. `worldplay download {variants.DEFAULT} {sr.DOWNLOAD_PIECE}`",
    )


def _variants() -> dict[str, Variant]:
    released = (
        Variant(
            name=record.name,
            title=record.title,
            pieces=(*layout.shared_piece_names(record.name), record.piece),
            action_checkpoint=layout.action_checkpoint(record.name),
        )
        for record in variants.all_variants()
    )
    return {variant.name: variant for variant in (*released, _sr_addon(), *_EXTRAS)}


VARIANTS: Mapping[str, Variant] = _Live(_variants)


def released_names() -> list[str]:
    return [variant.name for variant in VARIANTS.values() if variant.released]


def unknown_name(kind: str, name: str, known: list[str], listing: str) -> BadInput:
    """The one error for a mistyped variant or piece name: what is valid, and the closest match if any."""
    close = difflib.get_close_matches(name, known, n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return BadInput(f"unknown {kind} {name!r}{guess}", f"{kind}s: {listing}")


def find_variant(name: str, *, accept_all: bool = False) -> Variant:
    """A released variant by name; unknown and unreleased names are bad input (exit 2) wherever they are typed."""
    variant = VARIANTS.get(name)
    if variant is None:
        known = [*VARIANTS, "all"] if accept_all else list(VARIANTS)
        listing = ", ".join(released_names()) + (" or all" if accept_all else "")
        raise unknown_name("variant", name, known, listing)
    if not variant.released:
        raise BadInput(f"{name} ({variant.title}) is not released yet", variant.note)
    return variant


def select(names: list[str], skip: list[str] | None = None) -> tuple[list[Variant], list[Piece]]:
    """The variants named (or all released ones for `all`) and their pieces, shared pieces once."""
    skip = list(skip or [])
    for name in skip:
        if name not in PIECES:
            raise unknown_name("piece", name, list(PIECES), ", ".join(PIECES))
    if not names:
        raise BadInput("no variant given", f"variants: {', '.join(released_names())} or all")
    variants: list[Variant] = []
    for name in names:
        if name == "all":
            variants.extend(variant for variant in VARIANTS.values() if variant.released)
        else:
            variants.append(find_variant(name, accept_all=True))
    variants = list({variant.name: variant for variant in variants}.values())
    piece_names = dict.fromkeys(name for variant in variants for name in variant.pieces if name not in skip)
    return variants, [PIECES[name] for name in piece_names]
