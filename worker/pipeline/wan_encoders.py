"""The WAN family's conditioning: UMT5 prompt states and the image-to-video latent.

Text (`WanTextEncoder`): each prompt is cleaned (ftfy, HTML entities twice, runs of whitespace), tokenised to
exactly 512 tokens (truncated, closing `</s>`, right-padded) and run through UMT5 with its attention mask;
the rows past each prompt's own tokens are then set to zero. The WAN transformer attends to all 512 rows
without a mask, so those zero rows are part of the condition, as in the official pipeline.

Image (`image_condition`): the reference image is LANCZOS-resized to cover the frame (sizes truncated to
integers), centre-cropped (offsets floored), scaled as `x / 127.5 - 1`, and encoded by the Wan VAE; a
*sample* of the posterior (not its mean), normalised, is latent 0 of an image-to-video rollout.

`write_tiny_wan_text_encoder` writes a tiny random UMT5 and a tiny T5-style tokenizer, built offline.
"""

from __future__ import annotations

import html
import string
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worker.models.wan.vae import WanVAE

MAX_SEQUENCE_LENGTH = 512


def clean_prompt(text: str) -> str:
    """ftfy's text fixes, HTML entities undone twice, whitespace runs collapsed to one space, trimmed."""
    import ftfy
    import regex

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


class WanTextEncoder:
    """UMT5 encoder states of prompts, [B, 512, d_model] (4096 for the released UMT5-XXL)."""

    def __init__(self, tokenizer, model, device: torch.device | str = "cpu"):
        self.tokenizer = tokenizer
        self.model = model
        self.device = torch.device(device)

    @classmethod
    def load(
        cls,
        text_encoder_dir: str | Path,
        tokenizer_dir: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> WanTextEncoder:
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        model = UMT5EncoderModel.from_pretrained(text_encoder_dir, dtype=dtype).to(device).eval()
        return cls(tokenizer, model.requires_grad_(False), device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, attention mask), each [B, 512]."""
        tokens = self.tokenizer(
            [clean_prompt(prompt) for prompt in prompts],
            padding="max_length",
            max_length=MAX_SEQUENCE_LENGTH,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return tokens.input_ids, tokens.attention_mask

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[B, 512, d_model] in the encoder's dtype; rows past each prompt's tokens are zero."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return states.masked_fill(~mask.bool()[..., None], 0.0)


def wan_image_frame(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """Cover-resize (LANCZOS), centre crop and scale to [-1, 1]: [1, 3, 1, height, width] float32."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    resized = image.resize((int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    pixels = np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None, :, None]


def image_condition(
    vae: WanVAE, image: Image.Image, width: int, height: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The image-to-video latent 0: a normalised VAE posterior sample of the framed image, [1, z, 1, h, w]."""
    frame = wan_image_frame(image, width, height).to(vae.device)
    return vae.encode_image(frame, generator)


# A T5-style vocabulary for the tiny tokenizer: the specials at the released ids (pad 0, eos 1, unk 2),
# whole words of a few prompts, then single characters so that any ASCII text tokenises.
TINY_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
TINY_WORDS = (
    "a red car drives along coastal road at sunset the camera follows from behind shop sign that reads open "
    "above wooden door in quiet street forest path morning light fog birds slow forward movement of and with"
).split()
WORD_BOUNDARY = "\u2581"  # SentencePiece's word-start marker


def _write_tiny_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # 1. a Unigram model over a fixed vocabulary (no training: the same ids on every tokenizers version)
    vocabulary = [(token, 0.0) for token in TINY_SPECIAL_TOKENS]
    vocabulary += [(WORD_BOUNDARY + word, -5.0) for word in dict.fromkeys(TINY_WORDS)]
    vocabulary += [(WORD_BOUNDARY, -8.0)]
    vocabulary += [(character, -10.0) for character in string.ascii_letters + string.digits + string.punctuation]
    backend = Tokenizer(models.Unigram(vocabulary, unk_id=TINY_SPECIAL_TOKENS.index("<unk>")))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    # 2. every sequence closes with </s>, as the UMT5 tokenizer does
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", TINY_SPECIAL_TOKENS.index("</s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def write_tiny_wan_text_encoder(
    text_encoder_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0, d_model: int = 16, scale: float = 0.5
) -> tuple[Path, Path]:
    """Write a tiny random UMT5 encoder (`text_encoder_dir`) and tokenizer (`tokenizer_dir`), in the layout of
    Wan2.2-TI2V-5B-Diffusers' `text_encoder/` and `tokenizer/`. Weights are `randn(shape) * scale` from one
    seeded CPU generator in parameter-registration order. Returns both directories."""
    from transformers import UMT5Config, UMT5EncoderModel

    text_encoder_dir, tokenizer_dir = Path(text_encoder_dir), Path(tokenizer_dir)
    tokenizer = _write_tiny_tokenizer(tokenizer_dir)
    head_dim = 8
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=head_dim,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=d_model // head_dim,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = UMT5EncoderModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(text_encoder_dir)
    return text_encoder_dir, tokenizer_dir
