"""Condition encoders of HunyuanVideo-1.5 / WorldPlay: Qwen2.5-VL text states, byT5 glyph states, SigLIP states.

All three models come from `transformers` and load from the official model directory unchanged:

    text_encoder/llm              Qwen2.5-VL-7B-Instruct; the language model's hidden_states[-3], chat-template
                                  prefix cropped, 1000 tokens                                  -> [B, 1000, 3584]
    text_encoder/byt5-small       byT5 encoder + tokenizer, extended with the Glyph-SDXL-v2 color/font tokens
    text_encoder/Glyph-SDXL-v2    and its encoder weights; only quoted text is encoded, zeros otherwise
                                                                                               -> [B, 256, 1472]
    vision_encoder/siglip         SigLIP on the reference image cropped to its own bucket size -> [B, 729, 1152]

With classifier-free guidance the batch is [negative, positive] (the official order); the negative prompt ""
is encoded as " ", its glyph states are always zeros and the vision states are shared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worldplay_cli.contract import layout
from worldplay_cli.contract.buckets import bucket_size
from worldplay_cli.contract.layout import (  # noqa: F401
    BYT5_DIR,
    GLYPH_DIR,
    LLM_DIR,
    SIGLIP_DIR,
    ModelLayout,
)

GLYPH_COLORS = Path(layout.GLYPH_COLORS)  # inside GLYPH_DIR
GLYPH_FONTS = Path(layout.GLYPH_FONTS)
GLYPH_CHECKPOINT = Path(layout.GLYPH_CHECKPOINT)
# Glyph-SDXL-v2 stores the byT5 encoder inside its text tower.
BYT5_PREFIX = "module.text_tower.encoder."

TEXT_MAX_LENGTH = 1000
BYT5_MAX_LENGTH = 256
# hidden_states[-(skip + 1)]: the third-to-last entry, without the final norm.
HIDDEN_STATE_SKIP_LAYER = 2
USER_MARKER = "<|im_start|>user\n"
# Used once to locate the end of the template prefix; any prompt gives the same position.
CROP_PROBE_PROMPT = "a photo of a cat"

_VIDEO_ASPECTS = [
    "1. The main content and theme of the video.",
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.",
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.",
    "4. background environment, light, style and atmosphere.",
    "5. camera angles, movements, and transitions used in the video.",
]
# The official string is a backslash-continued literal, so every aspect is preceded by nine spaces.
VIDEO_SYSTEM_PROMPT = "You are a helpful assistant. Describe the video by detailing the following aspects:" + "".join(
    " " * 9 + aspect for aspect in _VIDEO_ASPECTS
)

_GLYPH_PATTERN = re.compile(r"\"(.*?)\"|“(.*?)”")


def video_chat(prompt: str) -> list[dict[str, str]]:
    """The video-description chat the LLM reads; an empty prompt becomes a single space."""
    return [{"role": "system", "content": VIDEO_SYSTEM_PROMPT}, {"role": "user", "content": prompt or " "}]


class PromptEncoder:
    """Qwen2.5-VL language-model states of the video chat template, with the template prefix cropped."""

    def __init__(self, model, tokenizer, max_length: int = TEXT_MAX_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.crop_start = self._find_crop_start()

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16
    ) -> PromptEncoder:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(directory, dtype=dtype)
        # only the language model is needed; dropping the wrapper frees the vision tower
        model = getattr(model, "language_model", model)
        model.requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="right")
        return cls(model.to(device).eval(), tokenizer)

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _render(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(video_chat(prompt), tokenize=False, add_generation_prompt=True)

    def _find_crop_start(self) -> int:
        ids = self._token_ids(self._render(CROP_PROBE_PROMPT))
        marker = self._token_ids(USER_MARKER)
        for start in range(len(ids) - len(marker) + 1):
            if ids[start : start + len(marker)] == marker:
                return start + len(marker)
        raise ValueError(f"the LLM chat template has no {USER_MARKER!r} marker; cannot crop the template prefix")

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask [B, crop_start + max_length], right-padded and truncated."""
        return self.tokenizer(
            [self._render(prompt) for prompt in prompts],
            add_special_tokens=False,
            padding="max_length",
            truncation=True,
            max_length=self.crop_start + self.max_length,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> states [B, max_length, hidden] and mask [B, max_length] (int64)."""
        tokens = self.tokenize(prompts)
        device = self.model.device
        attention_mask = tokens["attention_mask"].to(device)
        outputs = self.model(
            input_ids=tokens["input_ids"].to(device), attention_mask=attention_mask, output_hidden_states=True
        )
        states = outputs.hidden_states[-(HIDDEN_STATE_SKIP_LAYER + 1)]
        return states[:, self.crop_start :], attention_mask[:, self.crop_start :]


def extract_glyph_texts(prompt: str) -> list[str]:
    """Texts in "straight" or “curly” quotes, in order; duplicates dropped when there are several."""
    texts = [straight or curly for straight, curly in _GLYPH_PATTERN.findall(prompt)]
    return list(dict.fromkeys(texts)) if len(texts) > 1 else texts


def format_glyph_prompt(texts: list[str]) -> str:
    """The Glyph-SDXL-v2 text prompt without styles (the pipeline never sets a color or font)."""
    return "".join(f'Text "{text}". ' for text in texts)


def glyph_special_tokens(colors: dict[str, int], fonts: dict[str, int]) -> list[str]:
    """Color tokens `<color-i>`, then font tokens `<xx-font-i>` (language code + index), in table order."""
    return [f"<color-{index}>" for index in range(len(colors))] + [
        f"<{code[:2]}-font-{index}>" for code, index in fonts.items()
    ]


class GlyphEncoder:
    """byT5 encoder with Glyph-SDXL-v2 weights over the quoted text of a prompt."""

    def __init__(self, model, tokenizer, max_length: int = BYT5_MAX_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        byt5_directory: str | Path,
        glyph_directory: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> GlyphEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        glyph_directory = Path(glyph_directory)
        # 1. tokenizer plus the color/font tokens, which the Glyph checkpoint's embedding table includes
        tokenizer = AutoTokenizer.from_pretrained(byt5_directory)
        colors = json.loads((glyph_directory / GLYPH_COLORS).read_text())
        fonts = json.loads((glyph_directory / GLYPH_FONTS).read_text())
        tokenizer.add_tokens(glyph_special_tokens(colors, fonts), special_tokens=True)

        # 2. byT5 encoder resized to that vocabulary, then overwritten by the Glyph weights
        model = T5EncoderModel.from_pretrained(byt5_directory)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        checkpoint = torch.load(glyph_directory / GLYPH_CHECKPOINT, map_location="cpu", weights_only=True)
        if "state_dict" in checkpoint:
            checkpoint = {
                key[len(BYT5_PREFIX) :]: value
                for key, value in checkpoint["state_dict"].items()
                if key.startswith(BYT5_PREFIX)
            }
        model.encoder.load_state_dict(checkpoint, strict=True)
        model.requires_grad_(False)
        return cls(model.to(device=device, dtype=dtype).eval(), tokenizer)

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """-> states [1, max_length, 1472] and mask [1, max_length] (int64); zeros when nothing is quoted."""
        device = self.model.device
        texts = extract_glyph_texts(prompt)
        if not texts:
            states = torch.zeros(1, self.max_length, self.hidden_size, device=device, dtype=self.model.dtype)
            return states, torch.zeros(1, self.max_length, dtype=torch.int64, device=device)
        tokens = self.tokenizer(
            format_glyph_prompt(texts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        mask = tokens["attention_mask"].to(device)
        states = self.model(input_ids=tokens["input_ids"].to(device), attention_mask=mask).last_hidden_state
        return states, mask


def bucket_resolution(width: int, height: int, base_size: int = 640) -> tuple[int, int]:
    """(height, width) of the image's bucket (contract.buckets.bucket_size, the one rule)."""
    bucket_width, bucket_height = bucket_size(width, height, base_size=base_size)
    return bucket_height, bucket_width


def resize_center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """LANCZOS-resize so the image covers width x height (scale = max of both ratios), then centre-crop."""
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    left = (resized.width - width) / 2
    top = (resized.height - height) / 2
    return resized.crop((left, top, left + width, top + height))


def _siglip_image_processor_class():
    # transformers 5 splits SigLIP preprocessing into backends; the PIL one computes what the 4.x class did
    try:
        from transformers import SiglipImageProcessorPil

        return SiglipImageProcessorPil
    except ImportError:
        from transformers import SiglipImageProcessor

        return SiglipImageProcessor


class VisionEncoder:
    """SigLIP last hidden states of the reference image, cropped to the bucket derived from the image itself."""

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16
    ) -> VisionEncoder:
        from transformers import SiglipVisionModel

        directory = Path(directory)
        model = SiglipVisionModel.from_pretrained(directory / layout.SIGLIP_MODEL_DIR, dtype=dtype)
        model.requires_grad_(False)
        processor = _siglip_image_processor_class().from_pretrained(directory / layout.SIGLIP_PROCESSOR_DIR)
        return cls(model.to(device).eval(), processor)

    @property
    def num_tokens(self) -> int:
        config = self.model.config
        return (config.image_size // config.patch_size) ** 2

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, image: Image.Image, base_size: int = 640) -> torch.Tensor:
        """RGB image -> [1, 729, 1152]; the crop ignores any user height/width, as in the official pipeline."""
        image = image.convert("RGB")
        height, width = bucket_resolution(image.width, image.height, base_size)
        pixels = np.array(resize_center_crop(image, width, height))
        inputs = self.processor(images=pixels, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(device=self.model.device, dtype=self.model.dtype)
        return self.model(pixel_values=pixel_values).last_hidden_state


@dataclass
class ConditionStates:
    """Everything the transformer is conditioned on; batch = [negative, positive] with guidance, else 1.

    Dtypes are the encoders' own (LLM fp16, byT5 fp32, SigLIP fp16 by default); the pipeline casts.
    """

    text: torch.Tensor  # [B, 1000, 3584]
    text_mask: torch.Tensor  # [B, 1000] int64
    byt5: torch.Tensor  # [B, 256, 1472]
    byt5_mask: torch.Tensor  # [B, 256] int64
    vision: torch.Tensor  # [B, 729, 1152]; zeros without a reference image


class ConditionEncoders:
    """The three condition encoders of a model directory, applied the way the official pipeline applies them."""

    def __init__(self, prompt: PromptEncoder, glyph: GlyphEncoder, vision: VisionEncoder):
        self.prompt = prompt
        self.glyph = glyph
        self.vision = vision

    @classmethod
    def from_model_dir(
        cls, root: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float16
    ) -> ConditionEncoders:
        """Load from the official layout; LLM and SigLIP in `dtype`, byT5 in fp32 (as the official code)."""
        where = ModelLayout(root)
        return cls(
            PromptEncoder.from_pretrained(where.llm_dir, device, dtype),
            GlyphEncoder.from_pretrained(where.byt5_dir, where.glyph_dir, device),
            VisionEncoder.from_pretrained(where.siglip_dir, device, dtype),
        )

    def encode_image(self, image: Image.Image | None, base_size: int = 640) -> torch.Tensor:
        """The SigLIP states [1, 729, 1152] of `image` (zeros without one): all of `encode` the prompt leaves alone."""
        if image is None:
            device, dtype = self.vision.model.device, self.vision.model.dtype
            return torch.zeros(1, self.vision.num_tokens, self.vision.hidden_size, device=device, dtype=dtype)
        return self.vision.encode(image, base_size)

    def encode(
        self,
        prompt: str,
        image: Image.Image | None = None,
        negative_prompt: str = "",
        guidance: bool = True,
        base_size: int = 640,
        vision: torch.Tensor | None = None,
    ) -> ConditionStates:
        """`vision`: the image's `encode_image(image, base_size)` when the caller has it already."""
        # 1. LLM states; the negative prompt is encoded on its own, like the official code
        text, text_mask = self.prompt.encode([prompt])
        byt5, byt5_mask = self.glyph.encode(prompt)
        if guidance:
            negative_text, negative_mask = self.prompt.encode([negative_prompt])
            text, text_mask = torch.cat([negative_text, text]), torch.cat([negative_mask, text_mask])
            # 2. glyph states of the negative branch are always those of an empty prompt (zeros)
            negative_byt5, negative_byt5_mask = self.glyph.encode("")
            byt5, byt5_mask = torch.cat([negative_byt5, byt5]), torch.cat([negative_byt5_mask, byt5_mask])

        # 3. vision states, shared by both branches
        if vision is None:
            vision = self.encode_image(image, base_size)
        vision = vision.expand(text.shape[0], -1, -1).clone()
        return ConditionStates(text, text_mask, byt5, byt5_mask, vision)
