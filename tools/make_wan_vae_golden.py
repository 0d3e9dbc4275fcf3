"""Write the WAN VAE and text golden tensors (tests/golden/wan_vae_*, wan_text_*) by running the official code.

    git -C PATH/TO/HY-WorldPlay archive HEAD wan hyvideo | tar -x -C /tmp/hywp-vae
    python tools/make_wan_vae_golden.py --official /tmp/hywp-vae [--out tests/golden]

Not part of the package and never run by the tests. At run time it imports the classes the official WAN
pipeline (`wan/inference/pipeline_wan_w_mem_relative_rope.py`) uses: the VAE subclass of
`wan/inference/helper.py` (diffusers' `AutoencoderKLWan` with a decode that keeps its causal caches between
calls, `is_first_chunk`), the pipeline's prompt-embedding method and its image preprocessing; and
transformers' `UMT5EncoderModel` + `AutoTokenizer` as the pipeline loads them. Nothing upstream is copied
into this repository. It runs them on CPU in fp32 with tiny seeded weights and writes:

- `wan_vae_param_order.txt`: the VAE's parameter names and shapes in registration order; the weights are
  `randn(shape, generator=g) * scale` drawn in that order (seed below), so tests regenerate them;
- `wan_vae_io.safetensors`: image preprocessing, image and video encode, the i2v latent, full and
  one-latent-at-a-time decode, the normalisation constants (see tests/golden/README.md);
- `wan_text_io.safetensors`: token ids, masks and prompt states of three prompts through a tiny UMT5 that
  `worker.pipeline.wan_encoders.write_tiny_wan_text_encoder` writes (seed below; a tokenizer built
  offline), run through the official prompt-embedding method;
- `wan_vae_facts.json`: the tiny configs, seeds, prompts and the upstream commit.

The official pipeline module imports the WAN sequence-parallel and retrieval helpers at import time (and
through them packages such as fastvideo and remote_pdb). None of them runs here, so they are registered as
stand-in modules whose names exist but must never be called.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from golden_common import seeded_weights, upstream_commit, write_order

REPOSITORY = Path(__file__).resolve().parents[1]
VAE_SEED, VAE_SCALE = 21, 0.1
INPUT_SEED = 22
SAMPLE_SEED = 23
TEXT_SEED = 24
# the tiny VAE: the released Wan2.2 structure (z 48, patch 2, residual stages, temporal [F, T, T], the released
# latent statistics) with narrow stages
VAE_KWARGS = dict(
    base_dim=8,
    decoder_base_dim=8,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
)
HEIGHT, WIDTH = 32, 48
VIDEO_FRAMES = 9
LATENT_FRAMES = 3
# the source image of the preprocessing: another aspect ratio than the frame, so both resize and crop act
SOURCE_HEIGHT, SOURCE_WIDTH = 37, 71
PROMPTS = [
    "A red car drives along a coastal road at sunset, the camera follows from behind.",
    "  A shop sign that reads &amp;quot;OPEN&amp;quot; \u201cabove\u201d a   wooden door\n\tin a quiet street.  ",
    " ".join(["forest"] * 600),  # longer than 512 tokens: truncated, still closed by </s>
]
STAND_INS = (
    "distributed",
    "distributed.parallel_state",
    "distributed.communication_op",
    "models.utils",
    "models.par_vae.tools",
    "hyvideo.utils.retrieval_context",
)


def stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so its submodules import

    def missing(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)

        def unused(*args, **kwargs):
            raise RuntimeError(f"{name}.{attribute} is a stand-in: the golden run must not call it")

        return unused

    module.__getattr__ = missing
    return module


def import_official(checkout: Path):
    # the pipeline imports its siblings as top-level packages (`from models.utils import ...`)
    sys.path[:0] = [str(checkout), str(checkout / "wan")]
    import diffusers.models  # noqa: F401
    import diffusers.pipelines.pipeline_utils  # noqa: F401

    sys.modules.update({name: stand_in(name) for name in STAND_INS})
    from inference.helper import MyVAE
    from inference.pipeline_wan_w_mem_relative_rope import WanPipeline, is_ftfy_available

    if not is_ftfy_available():
        raise SystemExit("the official prompt cleaning needs ftfy: pip install ftfy")
    return types.SimpleNamespace(VAE=MyVAE, Pipeline=WanPipeline)


def vae_golden(official, out: Path) -> dict[str, torch.Tensor]:
    from PIL import Image

    from worker.models.wan.vae import RELEASED_LATENTS_MEAN, RELEASED_LATENTS_STD

    vae = official.VAE(**VAE_KWARGS, latents_mean=list(RELEASED_LATENTS_MEAN), latents_std=list(RELEASED_LATENTS_STD))
    vae = vae.eval()
    order = seeded_weights(vae, VAE_SEED, VAE_SCALE)
    write_order(out / "wan_vae_param_order.txt", order)
    config = vae.config
    shape = (1, config.z_dim, 1, 1, 1)
    latents_mean = torch.tensor(config.latents_mean).view(shape)
    inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape)
    io: dict[str, torch.Tensor] = {
        "latents_mean": latents_mean.flatten(),
        "latents_std": torch.tensor(config.latents_std),
    }

    # 1. image preprocessing: the pipeline's resize + centre crop + [-1, 1] of a PNG file
    generator = torch.Generator().manual_seed(INPUT_SEED)
    source = torch.randint(0, 256, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), generator=generator, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "source.png"
        Image.fromarray(source.numpy()).save(path)
        frame = official.Pipeline.resize_center_crop_to_tensor(None, str(path), (WIDTH, HEIGHT))
    image = frame[None, :, None].float()
    io.update(image_source=source, image=image)

    # 2. the i2v condition as the pipeline makes it: a posterior sample (global RNG), then normalised
    posterior = vae.encode(image, return_dict=False)[0]
    torch.manual_seed(SAMPLE_SEED)
    sample = posterior.sample()
    io.update(
        image_mean=posterior.mean, image_logvar=posterior.logvar, image_latent=(sample - latents_mean) * inverse_std
    )

    # 3. a video: 9 frames -> 3 latents
    video = torch.rand(1, 3, VIDEO_FRAMES, HEIGHT, WIDTH, generator=generator) * 2 - 1
    posterior = vae.encode(video, return_dict=False)[0]
    io.update(video=video, video_mean=posterior.mean, video_logvar=posterior.logvar)

    # 4. decode normalised latents: whole (the pipeline's non-parallel path) and one latent per call as
    #    decode_next_latent does (the cache carried between calls, is_first_chunk only for the first)
    latents = torch.randn(1, config.z_dim, LATENT_FRAMES, HEIGHT // 16, WIDTH // 16, generator=generator)
    raw = latents / inverse_std + latents_mean
    io.update(latents=latents, decoded=vae.decode(raw, return_dict=False, is_first_chunk=True)[0])
    frames = [
        vae.decode(raw[:, :, index : index + 1], return_dict=False, is_first_chunk=index == 0)[0]
        for index in range(LATENT_FRAMES)
    ]
    io["decoded_per_latent"] = torch.cat(frames, dim=2)
    return io


def text_golden(official) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer, UMT5EncoderModel

    from worker.pipeline.wan_encoders import write_tiny_wan_text_encoder

    with tempfile.TemporaryDirectory() as scratch:
        encoder_dir, tokenizer_dir = write_tiny_wan_text_encoder(
            Path(scratch) / "text_encoder", Path(scratch) / "tokenizer", seed=TEXT_SEED
        )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        encoder = UMT5EncoderModel.from_pretrained(encoder_dir, dtype=torch.float32).eval()
    pipeline = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=encoder, _execution_device=torch.device("cpu"))
    states = official.Pipeline._get_t5_prompt_embeds(
        pipeline, PROMPTS, max_sequence_length=512, device=torch.device("cpu"), dtype=torch.float32
    )
    # the token ids the method fed the encoder (it does not return them): same tokenizer call on its cleaning
    from inference.pipeline_wan_w_mem_relative_rope import prompt_clean

    tokens = tokenizer(
        [prompt_clean(prompt) for prompt in PROMPTS],
        padding="max_length",
        max_length=512,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask, "prompt_embeds": states}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout (or archive) of HY-WorldPlay")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "tests" / "golden")
    parser.add_argument("--commit", help="the upstream commit, when --official is an archive (not a git checkout)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPOSITORY))
    official = import_official(args.official.resolve())
    torch.set_grad_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    outputs = {
        "wan_vae_io.safetensors": vae_golden(official, args.out),
        "wan_text_io.safetensors": text_golden(official),
    }
    for file_name, io in outputs.items():
        for name, tensor in io.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise SystemExit(f"{name} is not finite: the official code did not run as expected")
        save_file({name: tensor.contiguous() for name, tensor in io.items()}, str(args.out / file_name))
    facts = {
        "upstream": "Tencent-Hunyuan/HY-WorldPlay",
        "commit": args.commit or upstream_commit(args.official),
        "torch": torch.__version__,
        "vae": VAE_KWARGS,
        "vae_seed": VAE_SEED,
        "vae_scale": VAE_SCALE,
        "sample_seed": SAMPLE_SEED,
        "text_seed": TEXT_SEED,
        "prompts": PROMPTS,
        "image_size": [WIDTH, HEIGHT],
    }
    (args.out / "wan_vae_facts.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(json.dumps({"out": str(args.out), "commit": facts["commit"], "files": sorted(outputs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
