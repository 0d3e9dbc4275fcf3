"""Write tiny random text/vision encoders in the official model-directory layout, without any download.

    text_encoder/llm                 tiny Qwen2.5-VL + a byte-level BPE tokenizer with the Qwen chat markers
    text_encoder/byt5-small          tiny T5 encoder + the (file-less) ByT5 tokenizer
    text_encoder/Glyph-SDXL-v2       color/font token tables + checkpoints/byt5_model.pt
    vision_encoder/siglip            tiny SigLIP (image_encoder/) + its image processor (feature_extractor/)

The default widths match the golden tiny transformer (text 16, vision 24, byT5 1472), so together with a
tiny transformer and `worker.models.tiny_vae` they form a complete model directory that runs on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worker.pipeline.encoders import (
    BYT5_DIR,
    BYT5_PREFIX,
    GLYPH_CHECKPOINT,
    GLYPH_COLORS,
    GLYPH_DIR,
    GLYPH_FONTS,
    LLM_DIR,
    SIGLIP_DIR,
    VIDEO_SYSTEM_PROMPT,
    glyph_special_tokens,
)
from worldplay_cli.contract import layout

# Qwen2.5-VL's chat format for string contents (the released template also handles images and videos).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_COLORS = {"white": 0, "black": 1, "red": 2}
TINY_FONTS = {"en-Roboto-Regular": 0, "en-Roboto-Bold": 1, "zh-NotoSansSC-Regular": 0}
TOKENIZER_CORPUS = [
    VIDEO_SYSTEM_PROMPT,
    "A red car drives along a coastal road at sunset, the camera follows from behind.",
    'A shop sign that reads "OPEN" above a wooden door in a quiet street.',
    "A forest path in the morning, light fog, birds, slow forward camera movement.",
]


def write_tiny_encoders(
    root: str | Path, seed: int = 0, text_dim: int = 16, vision_dim: int = 24, byt5_dim: int = 1472
) -> Path:
    """Write the tiny LLM, byT5 + Glyph and SigLIP directories under `root`; returns `root`."""
    root = Path(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _write_llm(root / LLM_DIR, text_dim)
        _write_byt5(root / BYT5_DIR, root / GLYPH_DIR, byt5_dim)
        _write_siglip(root / SIGLIP_DIR, vision_dim)
    return root


def _write_llm(directory: Path, hidden_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    # 1. a byte-level BPE learnt from a few sentences, with the chat markers as special tokens
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=QWEN_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        padding_side="right",
        chat_template=TINY_CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(directory)

    # 2. three decoder layers, so hidden_states[-3] is an intermediate layer as in the 28-layer original
    head_dim = 8
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": 3,
            "num_attention_heads": hidden_size // head_dim,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": [0],
        },
    )
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(directory)


def _write_byt5(byt5_directory: Path, glyph_directory: Path, d_model: int) -> None:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    # 1. the byt5-small stand-in: stock byte vocabulary, no glyph tokens yet
    tokenizer = ByT5Tokenizer()
    tokenizer.save_pretrained(byt5_directory)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    encoder = T5EncoderModel(config)
    encoder.save_pretrained(byt5_directory)

    # 2. Glyph-SDXL-v2: token tables, and encoder weights resized for the added color/font tokens
    assets = glyph_directory / GLYPH_COLORS.parent
    assets.mkdir(parents=True, exist_ok=True)
    (glyph_directory / GLYPH_COLORS).write_text(json.dumps(TINY_COLORS))
    (glyph_directory / GLYPH_FONTS).write_text(json.dumps(TINY_FONTS))
    tokenizer.add_tokens(glyph_special_tokens(TINY_COLORS, TINY_FONTS), special_tokens=True)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    state = {BYT5_PREFIX + key: value.clone() for key, value in encoder.encoder.state_dict().items()}
    (glyph_directory / GLYPH_CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, glyph_directory / GLYPH_CHECKPOINT)


def _write_siglip(directory: Path, hidden_size: int) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    # 54 px / patch 2 = 27 x 27 = 729 tokens, the token count of the released 384 px / patch 14 SigLIP
    config = SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=54,
        patch_size=2,
    )
    SiglipVisionModel(config).save_pretrained(directory / layout.SIGLIP_MODEL_DIR)
    processor = {
        "image_processor_type": "SiglipImageProcessor",
        "do_resize": True,
        "size": {"height": 54, "width": 54},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (directory / layout.SIGLIP_PROCESSOR_DIR).mkdir(parents=True, exist_ok=True)
    (directory / layout.SIGLIP_PROCESSOR_DIR / layout.SIGLIP_PROCESSOR_CONFIG).write_text(
        json.dumps(processor, indent=2)
    )
