"""Find what a model variant needs inside the official model directory, or say exactly what is missing.

The layout is the one the official download script builds (and `worldplay download` reproduces):

    <root>/transformer/480p_i2v/config.json          architecture (its base weights are not needed: every
                                                     action checkpoint is a full state dict)
    <root>/{bidirectional_model,ar_model,ar_rl_model,ar_distilled_action_model}/
        diffusion_pytorch_model.safetensors          the variant's weights; for the distilled model the Hub
                                                     name `model.safetensors` is accepted as well
    <root>/vae, <root>/scheduler, <root>/text_encoder/{llm,byt5-small,Glyph-SDXL-v2}, <root>/vision_encoder/siglip
    <root>/transformer/720p_sr_distilled, <root>/upsampler/720p_sr_distilled      optional SR stage

A variant of the WAN family needs its own pieces instead (`contract.layout.WAN_SHARED_PIECES`: the
Wan2.2-TI2V-5B diffusers base and `wan_transformer/config.json`) and its checkpoint (`wan_transformer/` or
`wan_distilled_model/model.pt`); `layout.shared_pieces(variant)` says which.

Nothing here reads a tensor, so a missing piece is reported before any loading starts, all missing
pieces at once, with the `worldplay download` command that fetches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worldplay_cli.contract import layout, variants
from worldplay_cli.contract.errors import HintedError
from worldplay_cli.contract.layout import INDEX_NAME, WEIGHTS_NAME, ModelLayout  # noqa: F401  (names re-exported)

ACTION_DIRS = variants.view(lambda record: record.action_dir)  # variant -> folder, live
HUB_DISTILLED_NAME = variants.get("ar-distilled").hub_weights_name


def __getattr__(name: str):
    if name == "VARIANTS":  # every registered variant, read when asked (a test may register one)
        return variants.names()
    raise AttributeError(name)


SHARED_PIECES = layout.SHARED_PIECES  # (what, files, download piece) of the HunyuanVideo family
SR_FILES = layout.SR_FILES


class ModelDirError(HintedError):
    """The model directory cannot serve the request; `hint` says what to run, `missing` lists what is absent."""

    show_hint = True

    def __init__(self, message: str, hint: str = "", missing: list[MissingPiece] | None = None):
        super().__init__(message, hint)
        self.missing = missing or []


@dataclass(frozen=True)
class MissingPiece:
    what: str
    path: str  # relative to the model directory
    piece: str  # the `worldplay download` piece that provides it


@dataclass(frozen=True)
class ModelPaths:
    """Absolute locations of everything one variant loads."""

    root: Path
    variant: str
    transformer_dir: Path  # holds config.json (the WAN family: wan_transformer/)
    action_checkpoint: Path  # a .safetensors file or a shard index
    vae_dir: Path
    scheduler_dir: Path
    sr_transformer_dir: Path | None  # both None unless the optional SR weights are present
    sr_upsampler_dir: Path | None

    @property
    def has_sr(self) -> bool:
        return self.sr_transformer_dir is not None


def download_command(variant: str, root: Path | None = None, extra: str = "") -> str:
    directory = f" --model-dir {root}" if root is not None else ""
    return f"worldplay download {variant}{extra}{directory}"


def find_action_checkpoint(root: Path, variant: str) -> Path | None:
    """The variant's checkpoint file in `root` (full file, shard index, or the Hub's distilled name)."""
    directory = Path(root) / ACTION_DIRS[variant]
    for name in layout.checkpoint_names(variant):
        if (directory / name).is_file():
            return directory / name
    return None


def variant_of_checkpoint(path: Path) -> str | None:
    """Which variant an action checkpoint belongs to, judged by the official folder it sits in."""
    parents = {parent.name for parent in Path(path).resolve().parents} | {Path(path).parent.name}
    found = [variant for variant, directory in ACTION_DIRS.items() if directory in parents]
    return found[0] if len(found) == 1 else None


def missing_pieces(root: Path, variant: str) -> list[MissingPiece]:
    root = Path(root)
    missing = [
        MissingPiece(what, path, piece)
        for what, paths, piece in layout.shared_pieces(variant)
        for path in paths
        if not (root / path).is_file()
    ]
    if find_action_checkpoint(root, variant) is None:
        missing.append(
            MissingPiece(f"{variant} action checkpoint", layout.action_checkpoint(variant), variants.get(variant).piece)
        )
    return missing


def describe_missing(missing: list[MissingPiece], detailed_up_to: int = 3) -> str:
    """A few missing pieces with the first file each lacks; many as a list of names only."""
    first_paths: dict[str, str] = {}
    for piece in missing:
        first_paths.setdefault(piece.what, piece.path)
    if len(first_paths) > detailed_up_to:
        return ", ".join(first_paths)
    return "; ".join(f"{what} ({path})" for what, path in first_paths.items())


def resolve_model_dir(root: str | Path, variant: str, checkpoint: str | Path | None = None) -> ModelPaths:
    """Locate every file `variant` needs under `root` (or raise a `ModelDirError` listing all gaps).

    `checkpoint` replaces the variant's action checkpoint; it must not be another variant's file.
    """
    if variant not in ACTION_DIRS:
        raise ModelDirError(f"unknown variant {variant!r}", f"choose one of {', '.join(variants.names())}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ModelDirError(
            f"model directory {root} does not exist",
            f"run `{download_command(variant, root)}`, or point --model-dir (setting model_dir) at it",
        )
    missing = missing_pieces(root, variant)
    if checkpoint is not None:
        missing = [piece for piece in missing if not piece.piece.startswith("action-")]
        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.exists():
            raise ModelDirError(f"checkpoint {checkpoint} does not exist", "check the path")
        owner = variant_of_checkpoint(checkpoint)
        if owner is not None and owner != variant:
            raise ModelDirError(
                f"checkpoint {checkpoint} is the {owner} model ({ACTION_DIRS[owner]}/), but variant {variant} was asked for",
                f"use --variant {owner}, or the {ACTION_DIRS[variant]}/ checkpoint for {variant}",
            )
    if missing:
        raise ModelDirError(
            f"model directory {root} lacks what variant {variant} needs: {describe_missing(missing)}",
            f"run `{download_command(variant, root)}`",
            missing,
        )
    action = checkpoint if checkpoint is not None else find_action_checkpoint(root, variant)
    if variants.get(variant).family_name == "wan":
        wan = layout.WanLayout(root)
        return ModelPaths(root, variant, wan.transformer_dir, action, wan.vae_dir, wan.scheduler_dir, None, None)
    has_sr = all((root / path).is_file() for path in SR_FILES)
    where = ModelLayout(root)
    return ModelPaths(
        root=root,
        variant=variant,
        transformer_dir=where.transformer_dir,
        action_checkpoint=action,
        vae_dir=where.vae_dir,
        scheduler_dir=where.scheduler_dir,
        sr_transformer_dir=where.sr_transformer_dir if has_sr else None,
        sr_upsampler_dir=where.sr_upsampler_dir if has_sr else None,
    )
