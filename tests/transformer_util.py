"""What the transformer tests share: the golden tiny models and the HunyuanVideo prompt."""

from __future__ import annotations

from golden_util import TRANSFORMER, WAN_TRANSFORMER, regenerate_state_dict
from worker.models.tiny import GOLDEN_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer
from worker.models.wan.transformer import WanConfig, WanWorldPlayTransformer


def load_golden_model(state: dict | None = None) -> WorldPlayTransformer:
    """The golden tiny transformer in eval mode, from `state` (the conftest fixture) or regenerated."""
    model = WorldPlayTransformer(GOLDEN_TRANSFORMER_CONFIG)
    model.load_state_dict(regenerate_state_dict(TRANSFORMER) if state is None else state, strict=True)
    return model.eval()


def golden_prompt(io: dict) -> PromptEmbeddings:
    return PromptEmbeddings(io["text"], io["text_mask"], io["byt5"], io["byt5_mask"], io["vision"])


def load_wan_golden_model() -> WanWorldPlayTransformer:
    """The WAN-5B golden tiny transformer (tools/make_wan_golden.py) in eval mode, fp32, SDPA."""
    model = WanWorldPlayTransformer(WanConfig.tiny(), attention_backend="sdpa")
    model.load_state_dict(regenerate_state_dict(WAN_TRANSFORMER), strict=True)
    return model.eval().requires_grad_(False)
