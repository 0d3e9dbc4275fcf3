"""The one place the worker chooses by model family: which pipeline class loads a variant, which stream plays
it live, and how big its transformer is (for the memory profiles' estimates).

`contract.variants` says which family a variant belongs to; everything family-specific past this point is
inside the family's pipeline (`worker.pipeline.pipeline.WorldPlayPipeline` for HunyuanVideo-1.5,
`worker.pipeline.wan_pipeline.WanPipeline` for WAN-5B), which both offer what the runtime uses, and its
live stream (`worker.pipeline.stream.ARStream`, `worker.pipeline.wan_stream.WanStream`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from worldplay_cli.contract import variants


def _hunyuan_pipeline():
    from worker.pipeline.pipeline import WorldPlayPipeline

    return WorldPlayPipeline


def _wan_pipeline():
    from worker.pipeline.wan_pipeline import WanPipeline

    return WanPipeline


def _hunyuan_stream():
    from worker.pipeline.stream import ARStream

    return ARStream


def _wan_stream():
    from worker.pipeline.wan_stream import WanStream

    return WanStream


def _hunyuan_params(transformer_dir: Path) -> int:
    from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig

    with torch.device("meta"):
        config = WorldPlayTransformerConfig.from_json(transformer_dir / "config.json")
        return sum(parameter.numel() for parameter in WorldPlayTransformer(config).parameters())


def _wan_params(transformer_dir: Path) -> int:
    from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer

    with torch.device("meta"):
        config = WanConfig.from_json(transformer_dir / "config.json")
        return sum(parameter.numel() for parameter in WanWorldPlayTransformer(config).parameters())


_PIPELINES = {"hunyuan": _hunyuan_pipeline, "wan": _wan_pipeline}
_STREAMS = {"hunyuan": _hunyuan_stream, "wan": _wan_stream}
_PARAMS = {"hunyuan": _hunyuan_params, "wan": _wan_params}


def pipeline_class(variant: str):
    """The pipeline class of `variant`'s family (imported when asked: each pulls in its own model code)."""
    return _PIPELINES[variants.get(variant).family_name]()


def load_pipeline(model_dir: str | Path, variant: str, **options):
    """`<family pipeline>.from_model_dir(model_dir, variant, **options)`."""
    return pipeline_class(variant).from_model_dir(model_dir, variant, **options)


def open_stream(pipeline, image, options):
    """The open-ended rollout of a live session on `pipeline` (`ARStream` or `WanStream`, one surface: `step`
    per chunk, `knows`/`prepare_prompt`, `num_chunks`, `steps`, `guidance_scale`, `width`, `height`).
    `image` None: text-to-video, for a family that needs no image."""
    return _STREAMS[variants.get(pipeline.variant).family_name]()(pipeline, image, options)


def transformer_scale(transformer_dir: Path, variant: str) -> float:
    """The transformer's parameters (counted on the meta device) over its family's released count: how much
    the memory profiles' released-model estimates shrink for, e.g., a tiny model."""
    family = variants.get(variant).family
    return _PARAMS[family.name](Path(transformer_dir)) / family.memory.transformer_params
