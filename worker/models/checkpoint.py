"""Load the WorldPlay transformer from the official model directory and action checkpoints.

Layout (unchanged from the official download):

    <model_dir>/transformer/480p_i2v/config.json                    architecture
    <model_dir>/transformer/480p_i2v/diffusion_pytorch_model*.safetensors   base HunyuanVideo-1.5 weights
    <model_dir>/{bidirectional_model,ar_model,ar_rl_model,ar_distilled_action_model}/
        diffusion_pytorch_model.safetensors                          full WorldPlay state dicts

An action checkpoint holds all 1905 tensors and the official loader overwrites every base tensor with it
(strict=True), so when one is given the base weights are not read at all. The model is built on the meta
device and each tensor is read, cast and placed once, so the weights never exist twice in memory. Key
names, shapes and coverage are checked from the file headers before any tensor is read.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig
from worldplay_cli.contract import layout, variants
from worldplay_cli.contract.errors import HintedError

# File and folder names of the layout (contract.layout) and each variant's folder (contract.variants).
CONFIG_NAME = layout.CONFIG_NAME
WEIGHTS_NAME = layout.WEIGHTS_NAME
INDEX_NAME = layout.INDEX_NAME
# The distilled checkpoint's name on the Hub; the official download script copies it to WEIGHTS_NAME.
HUB_DISTILLED_NAME = variants.get("ar-distilled").hub_weights_name
TRANSFORMER_DIR = Path(layout.TRANSFORMER_DIR)
REDOWNLOAD = "re-download the checkpoint"
ACTION_CHECKPOINT_DIRS = variants.view(lambda record: record.action_dir)  # variant -> folder, live


class CheckpointError(HintedError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; `hint` says what to do about it."""

    show_hint = True

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint)


@dataclass
class LoadReport:
    """How a checkpoint's tensors line up with the model's parameters."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        parts = []
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:limit]) + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")
                parts.append(f"{len(names)} {label}: {shown}")
        if self.mismatched:
            shown = ", ".join(
                f"{name} (model {list(want)}, file {list(got)})" for name, want, got in self.mismatched[:limit]
            )
            parts.append(f"{len(self.mismatched)} mis-shaped: {shown}")
        return "; ".join(parts) if parts else f"all {self.loaded} tensors match"


# ---------------------------------------------------------------------------------------------------
# Locating files


def find_transformer_dir(model_dir: str | Path) -> Path:
    """`model_dir` itself when it holds config.json, else `model_dir/transformer/480p_i2v`."""
    model_dir = Path(model_dir)
    for candidate in (model_dir, model_dir / TRANSFORMER_DIR):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise CheckpointError(
        f"no transformer config.json in {model_dir} or {model_dir / TRANSFORMER_DIR}",
        "point at the HunyuanVideo-1.5 model directory (run `worldplay download`)",
    )


def action_checkpoint_path(model_dir: str | Path, variant: str) -> Path:
    """The action checkpoint of a model variant ("bi", "ar", "ar-rl", "ar-distilled") inside `model_dir`."""
    if variant not in ACTION_CHECKPOINT_DIRS:
        choices = ", ".join(ACTION_CHECKPOINT_DIRS)
        raise CheckpointError(f"unknown model variant {variant!r}", f"choose one of {choices}")
    return Path(model_dir) / ACTION_CHECKPOINT_DIRS[variant]


def resolve_weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint given as a file, a `*.index.json` or a directory holding either."""
    path = Path(path)
    if path.is_dir():
        for name in (INDEX_NAME, WEIGHTS_NAME, HUB_DISTILLED_NAME):
            if (path / name).is_file():
                return resolve_weight_files(path / name)
        raise CheckpointError(f"no {WEIGHTS_NAME} (or sharded {INDEX_NAME}) in {path}", "check the download finished")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path or run `worldplay download`")
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path} is not a safetensors shard index: {error}", REDOWNLOAD) from error
        files = [path.parent / name for name in sorted(set(weight_map.values()))]
        absent = [str(file) for file in files if not file.is_file()]
        if absent:
            raise CheckpointError(f"shards listed in {path} are missing: {', '.join(absent)}", REDOWNLOAD)
        return files
    return [path]


# ---------------------------------------------------------------------------------------------------
# Reading


class SafetensorsCheckpoint:
    """Lazy view over one or more safetensors files: names and shapes from the headers, tensors on demand."""

    def __init__(self, files: list[Path], device: str = "cpu"):
        from safetensors import safe_open

        self._stack = ExitStack()
        self._handles = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            try:
                handle = self._stack.enter_context(safe_open(str(file), framework="pt", device=device))
                names = list(handle.keys())
                shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
            except Exception as error:  # safetensors raises its own (non-exported) error type
                self.close()
                raise CheckpointError(
                    f"{file} is not a readable safetensors file ({error})",
                    "the file is truncated or corrupt; delete it and download it again",
                ) from error
            for name in names:
                if name in self.shapes:
                    self.close()
                    raise CheckpointError(f"tensor {name} appears in more than one shard ({file})", REDOWNLOAD)
                self._handles[name] = handle
            self.shapes.update(shapes)

    def get(self, name: str) -> torch.Tensor:
        return self._handles[name].get_tensor(name)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compare_keys(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> LoadReport:
    expected = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    report = LoadReport()
    report.missing = [name for name in expected if name not in shapes]
    report.unexpected = sorted(name for name in shapes if name not in expected)
    report.mismatched = [
        (name, expected[name], shapes[name]) for name in expected if name in shapes and shapes[name] != expected[name]
    ]
    return report


def explain_mismatch(report: LoadReport, expected_count: int, source: str) -> CheckpointError:
    """A readable error naming the problem keys, with a hint for the common wrong-file cases."""
    message = f"{source} does not fit the WorldPlay transformer: {report.summary()}"
    present = expected_count - len(report.missing)
    if report.missing and all(is_action_parameter(name) for name in report.missing):
        hint = (
            "these are the base HunyuanVideo-1.5 weights without WorldPlay's action parameters; "
            "pass an action checkpoint (e.g. ar_model/)"
        )
    elif any(".img_attn_qkv." in name or name.startswith("txt_in_2.") for name in report.unexpected):
        hint = "this looks like a converted (diffusers/FastVideo) checkpoint; use the official HY-WorldPlay file"
    elif present < expected_count // 2:
        hint = f"only {present} of {expected_count} expected tensors found: not a WorldPlay transformer checkpoint"
    elif report.mismatched:
        hint = "the checkpoint was trained for a different architecture than config.json describes"
    else:
        hint = "the checkpoint is incomplete or from another version; re-download it"
    return CheckpointError(message, hint)


def load_weights(
    model: nn.Module,
    checkpoint: str | Path | list[Path],
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    strict: bool = True,
) -> LoadReport:
    """Place the checkpoint's tensors into `model` (built on the meta device or not), cast to `dtype`.

    Strict: every parameter must be present with its shape and nothing else may be in the file, else a
    `CheckpointError` names the keys before anything is read. Not strict: matching tensors are loaded and
    missing parameters are zero-filled (for the action parameters that is what the official
    initialisation amounts to: no action effect).
    """
    files = checkpoint if isinstance(checkpoint, list) else resolve_weight_files(checkpoint)
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} shards)"
    device = torch.device(device)
    with SafetensorsCheckpoint(files, device="cpu" if device.type == "meta" else str(device)) as reader:
        report = compare_keys(model, reader.shapes)
        expected_count = sum(1 for _ in model.parameters())
        if strict and not report.ok:
            raise explain_mismatch(report, expected_count, source)
        skipped = {name for name, _, _ in report.mismatched}
        for name, parameter in list(model.named_parameters()):
            target_dtype = dtype or (parameter.dtype if parameter.device.type != "meta" else None)
            if name in reader.shapes and name not in skipped:
                tensor = reader.get(name)
                report.loaded += 1
            else:
                tensor = torch.zeros(parameter.shape, dtype=target_dtype or torch.float32)
            _set_parameter(model, name, tensor.to(device=device, dtype=target_dtype or tensor.dtype))
    return report


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, attribute, nn.Parameter(tensor, requires_grad=False))


def is_action_parameter(name: str) -> bool:
    """Parameters WorldPlay adds to HunyuanVideo-1.5 (absent from the base weights)."""
    return name.startswith("action_in.") or ".img_attn_prope_proj." in name


# ---------------------------------------------------------------------------------------------------
# The one call the pipeline needs


def load_transformer(
    model_dir: str | Path,
    action_checkpoint: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    strict: bool = True,
    attention_backend: str = "auto",
) -> WorldPlayTransformer:
    """Build the transformer from the official config.json and load its weights, ready for inference.

    `action_checkpoint`: a `.safetensors` file, a shard index or a directory (e.g. `<model_dir>/ar_model`);
    when given, it is the only weight source (it is a full state dict). Without it the base weights in the
    transformer directory are loaded, which lack the action parameters (strict loading then fails).
    """
    transformer_dir = find_transformer_dir(model_dir)
    config = WorldPlayTransformerConfig.from_json(transformer_dir / CONFIG_NAME)
    with torch.device("meta"):
        model = WorldPlayTransformer(config, attention_backend=attention_backend)
    load_weights(model, action_checkpoint if action_checkpoint is not None else transformer_dir, dtype, device, strict)
    return model.eval()


def load_sr_transformer(
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    attention_backend: str = "auto",
) -> WorldPlayTransformer:
    """The 720p super-resolution transformer (`transformer/720p_sr_distilled`): the same class, built from
    its own config.json without the action parameters (the official loader adds them to the 480p model
    only), its weights read strictly from `directory`."""
    directory = Path(directory)
    config = replace(WorldPlayTransformerConfig.from_json(directory / CONFIG_NAME), action_parameters=False)
    with torch.device("meta"):
        model = WorldPlayTransformer(config, attention_backend=attention_backend)
    load_weights(model, directory, dtype, device, strict=True)
    return model.eval()
