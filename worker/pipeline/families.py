"""The one place the worker chooses by model family: which pipeline class loads a variant, which stream plays
it live, and how big its transformer is (for the memory profiles' estimates).

`contract.variants` says which family a variant belongs to; everything family-specific past this point is
inside the family's pipeline (`worker.pipeline.pipeline.WorldPlayPipeline` for HunyuanVideo-1.5,
`worker.pipeline.wan_pipeline.WanPipeline` for WAN-5B), which both offer what the runtime uses, and its
live stream (`worker.pipeline.stream.ARStream`, `worker.pipeline.wan_stream.WanStream`).
"""

from __future__ import annotations

import functools
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


def _hunyuan_transformer():
    from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig

    return WorldPlayTransformerConfig, WorldPlayTransformer


def _wan_transformer():
    from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer

    return WanConfig, WanWorldPlayTransformer


@functools.lru_cache(maxsize=8)
def parameter_count(model_class: type, config) -> int:
    """The parameters of `model_class(config)` (a frozen config), counted on the meta device once per config:
    a resident worker asks for every job, and even a meta model of the released size takes ~0.1 s."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in model_class(config).parameters())


_PIPELINES = {"hunyuan": _hunyuan_pipeline, "wan": _wan_pipeline}
_STREAMS = {"hunyuan": _hunyuan_stream, "wan": _wan_stream}
_TRANSFORMERS = {"hunyuan": _hunyuan_transformer, "wan": _wan_transformer}


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
    config_class, model_class = _TRANSFORMERS[family.name]()
    config = config_class.from_json(Path(transformer_dir) / "config.json")
    return parameter_count(model_class, config) / family.memory.transformer_params
