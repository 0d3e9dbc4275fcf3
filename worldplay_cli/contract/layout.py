"""The model directory's layout: the official one (the HunyuanVideo-1.5 root the official download script
builds, and `worldplay download` reproduces), named once.

    <root>/transformer/480p_i2v/{config.json, diffusion_pytorch_model*.safetensors}
    <root>/<variant's action_dir>/diffusion_pytorch_model.safetensors   (contract.variants: one per variant)
    <root>/vae, <root>/scheduler/scheduler_config.json
    <root>/text_encoder/{llm,byt5-small,Glyph-SDXL-v2}, <root>/vision_encoder/siglip/{image_encoder,feature_extractor}
    <root>/transformer/720p_sr_distilled, <root>/upsampler/720p_sr_distilled      optional SR stage
    <root>/worldplay-tiny-model.json   written last by `worldplay dev tiny-model`

The WAN family (`contract.variants.FAMILIES["wan"]`) lives in the same root without touching those names:
the Wan2.2-TI2V-5B diffusers base in its own folder, the WorldPlay WAN folders as the HY-WorldPlay
repository names them (`huggingface-cli download tencent/HY-WorldPlay wan_transformer wan_distilled_model`):

    <root>/Wan2.2-TI2V-5B-Diffusers/{model_index.json, vae, text_encoder, tokenizer, scheduler}
    <root>/wan_transformer/{config.json, diffusion_pytorch_model.safetensors}    the wan-ar weights
    <root>/wan_distilled_model/model.pt                                           the wan-distilled weights

`ModelLayout(root)` / `WanLayout(root)` carry every sub-path, so the download catalog, the model-directory check, the
checkpoint loader, the encoders, the scheduler and the tiny-model writer all read the same names.
Torch-free; imports only `contract.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worldplay_cli.contract import variants

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"

TRANSFORMER_DIR = "transformer/480p_i2v"
VAE_DIR = "vae"
SCHEDULER_DIR = "scheduler"
LLM_DIR = "text_encoder/llm"
BYT5_DIR = "text_encoder/byt5-small"
GLYPH_DIR = "text_encoder/Glyph-SDXL-v2"
SIGLIP_DIR = "vision_encoder/siglip"
SIGLIP_MODEL_DIR = "image_encoder"  # inside SIGLIP_DIR
SIGLIP_PROCESSOR_DIR = "feature_extractor"  # inside SIGLIP_DIR
SIGLIP_PROCESSOR_CONFIG = "preprocessor_config.json"
GLYPH_COLORS = "assets/color_idx.json"  # inside GLYPH_DIR
GLYPH_FONTS = "assets/multilingual_10-lang_idx.json"
GLYPH_CHECKPOINT = "checkpoints/byt5_model.pt"
SR_TRANSFORMER_DIR = "transformer/720p_sr_distilled"
SR_UPSAMPLER_DIR = "upsampler/720p_sr_distilled"
TINY_MARKER = "worldplay-tiny-model.json"

# What every variant needs besides its action checkpoint, all reported at once when missing:
# (what, files that must exist, the `worldplay download` piece that provides them).
SHARED_PIECES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("transformer config", (f"{TRANSFORMER_DIR}/config.json",), "hunyuanvideo-480p-i2v"),
    ("VAE", (f"{VAE_DIR}/config.json", f"{VAE_DIR}/{WEIGHTS_NAME}"), "hunyuanvideo-480p-i2v"),
    ("scheduler config", (f"{SCHEDULER_DIR}/{SCHEDULER_CONFIG_NAME}",), "hunyuanvideo-480p-i2v"),
    ("Qwen2.5-VL text encoder", (f"{LLM_DIR}/config.json",), "qwen2.5-vl"),
    ("byT5 glyph encoder", (f"{BYT5_DIR}/config.json",), "byt5-small"),
    (
        "Glyph-SDXL-v2 weights",
        (
            f"{GLYPH_DIR}/{GLYPH_CHECKPOINT}",
            f"{GLYPH_DIR}/{GLYPH_COLORS}",
            f"{GLYPH_DIR}/{GLYPH_FONTS}",
        ),
        "glyph-sdxl-v2",
    ),
    (
        "SigLIP vision encoder",
        (
            f"{SIGLIP_DIR}/{SIGLIP_MODEL_DIR}/config.json",
            f"{SIGLIP_DIR}/{SIGLIP_PROCESSOR_DIR}/{SIGLIP_PROCESSOR_CONFIG}",
        ),
        "siglip",
    ),
)
SR_FILES = (f"{SR_TRANSFORMER_DIR}/config.json", f"{SR_UPSAMPLER_DIR}/config.json")

WAN_BASE_DIR = "Wan2.2-TI2V-5B-Diffusers"  # the diffusers base (the official `--model_id`)
WAN_MODEL_INDEX = f"{WAN_BASE_DIR}/model_index.json"
WAN_VAE_DIR = f"{WAN_BASE_DIR}/vae"
WAN_TEXT_ENCODER_DIR = f"{WAN_BASE_DIR}/text_encoder"
WAN_TOKENIZER_DIR = f"{WAN_BASE_DIR}/tokenizer"
WAN_SCHEDULER_DIR = f"{WAN_BASE_DIR}/scheduler"
WAN_TRANSFORMER_DIR = "wan_transformer"  # its config.json is the architecture of every WAN variant
WAN_BASE_PIECE = "wan2.2-ti2v-5b"
WAN_CONFIG_PIECE = "wan-transformer-config"

WAN_SHARED_PIECES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("WAN transformer config", (f"{WAN_TRANSFORMER_DIR}/{CONFIG_NAME}",), WAN_CONFIG_PIECE),
    ("Wan2.2 pipeline index", (WAN_MODEL_INDEX,), WAN_BASE_PIECE),
    ("Wan2.2 VAE", (f"{WAN_VAE_DIR}/{CONFIG_NAME}", f"{WAN_VAE_DIR}/{WEIGHTS_NAME}"), WAN_BASE_PIECE),
    ("UMT5-XXL text encoder", (f"{WAN_TEXT_ENCODER_DIR}/{CONFIG_NAME}",), WAN_BASE_PIECE),
    ("UMT5 tokenizer", (f"{WAN_TOKENIZER_DIR}/tokenizer_config.json",), WAN_BASE_PIECE),
    ("Wan2.2 scheduler config", (f"{WAN_SCHEDULER_DIR}/{SCHEDULER_CONFIG_NAME}",), WAN_BASE_PIECE),
)
_FAMILY_PIECES = {"hunyuan": SHARED_PIECES, "wan": WAN_SHARED_PIECES}


def shared_pieces(variant: str) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """(what, files that must exist, download piece) of everything `variant` needs besides its checkpoint."""
    return _FAMILY_PIECES[variants.get(variant).family_name]


def shared_piece_names(variant: str | None = None) -> tuple[str, ...]:
    """The download pieces `variant` (default: a HunyuanVideo one) needs besides its own action checkpoint,
    in layout order."""
    pieces = shared_pieces(variant) if variant is not None else SHARED_PIECES
    return tuple(dict.fromkeys(piece for _, _, piece in pieces))


def action_dir(variant: str) -> str:
    return variants.get(variant).action_dir


def checkpoint_file(variant: str) -> str:
    """The file name of a variant's checkpoint in its folder (the diffusers default unless the record says)."""
    return variants.get(variant).checkpoint_name or WEIGHTS_NAME


def action_checkpoint(variant: str) -> str:
    """`<action_dir>/<checkpoint file>` of a variant, relative to the root."""
    return f"{action_dir(variant)}/{checkpoint_file(variant)}"


def checkpoint_names(variant: str | None = None) -> tuple[str, ...]:
    """File names an action checkpoint may have, in the order they are looked for (its own file, shard
    index, then the Hub's own name of any variant whose Hub file differs)."""
    records = [variants.get(variant)] if variant is not None else variants.all_variants()
    own = [record.checkpoint_name or WEIGHTS_NAME for record in records]
    hub = [record.hub_weights_name for record in records if record.hub_weights_name]
    return tuple(dict.fromkeys((*own, WEIGHTS_NAME, INDEX_NAME, *hub)))


@dataclass(frozen=True)
class ModelLayout:
    """Every location in a model directory rooted at `root`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def __truediv__(self, relative: str) -> Path:
        return self.root / relative

    transformer_dir = property(lambda self: self.root / TRANSFORMER_DIR)
    vae_dir = property(lambda self: self.root / VAE_DIR)
    scheduler_dir = property(lambda self: self.root / SCHEDULER_DIR)
    scheduler_config = property(lambda self: self.root / SCHEDULER_DIR / SCHEDULER_CONFIG_NAME)
    llm_dir = property(lambda self: self.root / LLM_DIR)
    byt5_dir = property(lambda self: self.root / BYT5_DIR)
    glyph_dir = property(lambda self: self.root / GLYPH_DIR)
    siglip_dir = property(lambda self: self.root / SIGLIP_DIR)
    sr_transformer_dir = property(lambda self: self.root / SR_TRANSFORMER_DIR)
    sr_upsampler_dir = property(lambda self: self.root / SR_UPSAMPLER_DIR)
    tiny_marker = property(lambda self: self.root / TINY_MARKER)

    def action_dir(self, variant: str) -> Path:
        return self.root / action_dir(variant)


@dataclass(frozen=True)
class WanLayout:
    """Every location of the WAN family in a model directory rooted at `root`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    base_dir = property(lambda self: self.root / WAN_BASE_DIR)
    model_index = property(lambda self: self.root / WAN_MODEL_INDEX)
    vae_dir = property(lambda self: self.root / WAN_VAE_DIR)
    text_encoder_dir = property(lambda self: self.root / WAN_TEXT_ENCODER_DIR)
    tokenizer_dir = property(lambda self: self.root / WAN_TOKENIZER_DIR)
    scheduler_dir = property(lambda self: self.root / WAN_SCHEDULER_DIR)
    transformer_dir = property(lambda self: self.root / WAN_TRANSFORMER_DIR)
    tiny_marker = property(lambda self: self.root / TINY_MARKER)

    def action_dir(self, variant: str) -> Path:
        return self.root / action_dir(variant)
