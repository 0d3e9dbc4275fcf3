"""What the transformer tests share: the golden tiny model and its prompt."""

from __future__ import annotations

from golden_util import TRANSFORMER, regenerate_state_dict
from worker.models.tiny import GOLDEN_TRANSFORMER_CONFIG
from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer


def load_golden_model(state: dict | None = None) -> WorldPlayTransformer:
    """The golden tiny transformer in eval mode, from `state` (the conftest fixture) or regenerated."""
    model = WorldPlayTransformer(GOLDEN_TRANSFORMER_CONFIG)
    model.load_state_dict(regenerate_state_dict(TRANSFORMER) if state is None else state, strict=True)
    return model.eval()


def golden_prompt(io: dict) -> PromptEmbeddings:
    return PromptEmbeddings(io["text"], io["text_mask"], io["byt5"], io["byt5_mask"], io["vision"])
