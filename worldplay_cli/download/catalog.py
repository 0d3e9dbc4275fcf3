"""What each variant needs: pieces (one repository each, filtered by patterns) and where they land.

Paths in the official layout are relative to the model directory (the HunyuanVideo-1.5 root). The
action checkpoints live inside it too, each as `<folder>/diffusion_pytorch_model.safetensors`, so one
directory holds everything a variant needs. Sizes are not stored here: they come from the Hub at plan
time (or from the manifest when offline).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from worldplay_cli.errors import BadInput

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

        return sorted(filter_repo_objects(
            list(paths), allow_patterns=list(self.allow_patterns or []) or None,
            ignore_patterns=list(self.ignore_patterns) or None,
        ))

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


_HV_REPO = "tencent/HunyuanVideo-1.5"
_WP_REPO = "tencent/HY-WorldPlay"
_ACTION_FILE = "diffusion_pytorch_model.safetensors"

PIECES: dict[str, Piece] = {
    piece.name: piece
    for piece in (
        Piece(
            name="hunyuanvideo-480p-i2v",
            title="HunyuanVideo-1.5 VAE, scheduler and 480p I2V transformer",
            repo=_HV_REPO,
            allow_patterns=("vae/*", "scheduler/*", "transformer/480p_i2v/*"),
        ),
        Piece(
            name="hunyuanvideo-sr",
            title="HunyuanVideo-1.5 720p super-resolution transformer and upsampler",
            repo=_HV_REPO,
            allow_patterns=("transformer/720p_sr_distilled/*", "upsampler/720p_sr_distilled/*"),
        ),
        Piece(
            name="qwen2.5-vl",
            title="Qwen2.5-VL-7B-Instruct text encoder",
            repo="Qwen/Qwen2.5-VL-7B-Instruct",
            target="text_encoder/llm",
        ),
        Piece(
            name="byt5-small",
            title="ByT5-small glyph text encoder",
            repo="google/byt5-small",
            # TensorFlow/Flax/Rust copies of the same weights are never loaded.
            ignore_patterns=("*.h5", "*.msgpack", "*.ot", "onnx/*"),
            target="text_encoder/byt5-small",
        ),
        Piece(
            name="glyph-sdxl-v2",
            title="Glyph-SDXL-v2 ByT5 weights and glyph vocabularies (ModelScope)",
            source="modelscope",
            repo="AI-ModelScope/Glyph-SDXL-v2",
            revision="master",
            allow_patterns=(
                "assets/color_idx.json", "assets/multilingual_10-lang_idx.json", "checkpoints/byt5_model.pt",
            ),
            target="text_encoder/Glyph-SDXL-v2",
        ),
        Piece(
            name="siglip",
            title="SigLIP vision encoder from FLUX.1-Redux-dev",
            repo="black-forest-labs/FLUX.1-Redux-dev",
            # Only these two subfolders are loaded; the Redux adapter itself is not used.
            allow_patterns=("image_encoder/*", "feature_extractor/*"),
            target="vision_encoder/siglip",
            gated=True,
        ),
        Piece(
            name="action-bi",
            title="HY-World 1.5 bidirectional action model",
            repo=_WP_REPO,
            allow_patterns=("bidirectional_model/*",),
        ),
        Piece(
            name="action-ar",
            title="HY-World 1.5 autoregressive action model",
            repo=_WP_REPO,
            allow_patterns=("ar_model/*",),
        ),
        Piece(
            name="action-ar-rl",
            title="HY-World 1.5 autoregressive action model with RL post-training (WorldCompass)",
            repo=_WP_REPO,
            allow_patterns=("ar_rl_model/*",),
        ),
        Piece(
            name="action-ar-distilled",
            title="HY-World 1.5 distilled autoregressive action model (4 steps)",
            repo=_WP_REPO,
            allow_patterns=("ar_distilled_action_model/*",),
            # The Hub file is `model.safetensors`; the official loader reads this name.
            renames={"ar_distilled_action_model/model.safetensors": f"ar_distilled_action_model/{_ACTION_FILE}"},
        ),
    )
}

_BASE = ("hunyuanvideo-480p-i2v", "qwen2.5-vl", "byt5-small", "glyph-sdxl-v2", "siglip")

VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            name="bi",
            title="HY-World1.5-Bidirectional-480P-I2V",
            pieces=(*_BASE, "action-bi"),
            action_checkpoint=f"bidirectional_model/{_ACTION_FILE}",
        ),
        Variant(
            name="ar",
            title="HY-World1.5-Autoregressive-480P-I2V",
            pieces=(*_BASE, "action-ar"),
            action_checkpoint=f"ar_model/{_ACTION_FILE}",
        ),
        Variant(
            name="ar-rl",
            title="HY-World1.5-Autoregressive-480P-I2V-rl",
            pieces=(*_BASE, "action-ar-rl"),
            action_checkpoint=f"ar_rl_model/{_ACTION_FILE}",
        ),
        Variant(
            name="ar-distilled",
            title="HY-World1.5-Autoregressive-480P-I2V-distill",
            pieces=(*_BASE, "action-ar-distilled"),
            action_checkpoint=f"ar_distilled_action_model/{_ACTION_FILE}",
        ),
        Variant(
            name="sr",
            title="720p super-resolution stage (optional add-on)",
            pieces=("hunyuanvideo-sr",),
            note="add-on: download it together with a variant, e.g. `worldplay download ar-distilled sr`",
        ),
        Variant(
            name="ar-rl-distilled",
            title="HY-World1.5-Autoregressive-480P-I2V-rl-distill",
            released=False,
            note="announced by Tencent as 'to be released'; no weights are published yet",
        ),
    )
}


def select(names: list[str], skip: list[str] | None = None) -> tuple[list[Variant], list[Piece]]:
    """The variants named (or all released ones for `all`) and their pieces, shared pieces once."""
    skip = list(skip or [])
    unknown_skip = [name for name in skip if name not in PIECES]
    if unknown_skip:
        raise BadInput(f"unknown piece {unknown_skip[0]!r}", f"pieces: {', '.join(PIECES)}")
    if not names:
        raise BadInput("no variant given", f"variants: {', '.join(VARIANTS)} or all")
    variants: list[Variant] = []
    for name in names:
        if name == "all":
            variants.extend(variant for variant in VARIANTS.values() if variant.released)
            continue
        variant = VARIANTS.get(name)
        if variant is None:
            raise BadInput(f"unknown variant {name!r}", f"variants: {', '.join(VARIANTS)} or all")
        if not variant.released:
            raise BadInput(f"{name} ({variant.title}) is not released yet", variant.note)
        variants.append(variant)
    variants = list({variant.name: variant for variant in variants}.values())
    piece_names = dict.fromkeys(name for variant in variants for name in variant.pieces if name not in skip)
    return variants, [PIECES[name] for name in piece_names]
