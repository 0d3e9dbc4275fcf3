"""Write the super-resolution golden tensors (tests/golden/tiny_sr_*) by running the official code.

    python tools/make_sr_golden.py --official PATH/TO/HY-WorldPlay [--out tests/golden]

Not part of the package and never run by the tests: it imports the official HY-WorldPlay modules (the
HunyuanVideo-1.5 transformer class with its SR block path, the `SRTo720pUpsampler`, the flow-matching
scheduler and the SR pipeline's bucket map and conditioning helpers) from the checkout the user points to,
at run time, so nothing upstream is copied into this repository. It runs them on CPU in fp32 with tiny
seeded weights and writes:

- `tiny_sr_transformer_param_order.txt` / `tiny_sr_upsampler_param_order.txt`: the official parameter
  names and shapes in registration order; the weights are `randn(shape, generator=g) * scale` drawn in
  that order (seeds below), so the tests regenerate them instead of storing megabytes;
- `tiny_sr_io.safetensors`: inputs and outputs (see tests/golden/README.md);
- `sr_sizes_schedule.json`: the official 480p -> 720p bucket map and the 6-step shift-2 schedule.

The official modules need diffusers, einops and loguru (a throwaway venv next to the project's torch is
enough). torchvision is only imported by the official pipeline module for image transforms this tool
never calls, so when it is absent an empty stand-in module is registered after diffusers has been
imported (diffusers then knows torchvision is unavailable and does not use it).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from golden_common import seeded_weights, upstream_commit, write_order

LATENT_CHANNELS = 4
TRANSFORMER_SEED, TRANSFORMER_SCALE = 11, 0.05
UPSAMPLER_SEED, UPSAMPLER_SCALE = 12, 0.1
INPUT_SEED = 13
LQ_NOISE_SEED = 14
SR_STEPS, SR_SHIFT, SR_STRENGTH = 6, 2.0, 0.7
# the tiny SR transformer: the 480p golden widths, 98 -> 4 + 5 + 5 input channels (latents | image cond +
# mask | LQ + ones), out 4, meanflow (time_r_in), no action parameters
TRANSFORMER_KWARGS = dict(
    patch_size=[1, 1, 1],
    in_channels=3 * LATENT_CHANNELS + 2,
    concat_condition=False,
    out_channels=LATENT_CHANNELS,
    hidden_size=64,
    heads_num=2,
    mlp_width_ratio=4.0,
    mlp_act_type="gelu_tanh",
    mm_double_blocks_depth=2,
    mm_single_blocks_depth=0,
    rope_dim_list=[8, 12, 12],
    qkv_bias=True,
    qk_norm=True,
    qk_norm_type="rms",
    guidance_embed=False,
    use_meanflow=True,
    text_projection="single_refiner",
    use_attention_mask=True,
    text_states_dim=16,
    text_states_dim_2=None,
    text_pool_type=None,
    rope_theta=256,
    attn_mode="torch",
    glyph_byT5_v2=True,
    vision_projection="linear",
    vision_states_dim=24,
    is_reshape_temporal_channels=False,
    use_cond_type_embedding=True,
    ideal_resolution="720p",
    ideal_task="i2v",
)
UPSAMPLER_KWARGS = dict(in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, hidden_channels=8, num_blocks=2)
# latent video sizes: 3 latent frames, 480p-like grid 2x3 upsampled to the 720p-like grid 4x6
FRAMES, LOW_GRID, HIGH_GRID = 3, (2, 3), (4, 6)


def import_official(checkout: Path):
    sys.path.insert(0, str(checkout))
    import diffusers.models  # noqa: F401  (decides torchvision's availability before any stand-in exists)
    import diffusers.pipelines.pipeline_utils  # noqa: F401

    try:
        import torchvision  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": stand_in, "torchvision.transforms": stand_in.transforms})
    from hyvideo.commons import parallel_states
    from hyvideo.models.transformers.modules.upsample import SRTo720pUpsampler
    from hyvideo.models.transformers.worldplay_1_5_transformer import HunyuanVideo_1_5_DiffusionTransformer
    from hyvideo.pipelines.hunyuan_video_sr_pipeline import BucketMap, HunyuanVideo_1_5_SR_Pipeline, SizeMap
    from hyvideo.schedulers.scheduling_flow_match_discrete import FlowMatchDiscreteScheduler

    # the official parallel state builds a CUDA device mesh on first use; one CPU process has no sequence
    # parallelism, so hand it the single-process state without a mesh
    dims = object.__new__(parallel_states.ParallelDims)
    dims.sp, dims.world_size = 1, 1
    setattr(parallel_states, "__parallel_dims", dims)
    return types.SimpleNamespace(
        Transformer=HunyuanVideo_1_5_DiffusionTransformer,
        Upsampler=SRTo720pUpsampler,
        BucketMap=BucketMap,
        SizeMap=SizeMap,
        Pipeline=HunyuanVideo_1_5_SR_Pipeline,
        Scheduler=FlowMatchDiscreteScheduler,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of Tencent-Hunyuan/HY-WorldPlay")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "golden")
    args = parser.parse_args(argv)
    official = import_official(args.official.resolve())
    torch.set_grad_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    io: dict[str, torch.Tensor] = {}

    # 1. the sizes: every 480p bucket's 720p bucket, and the SR schedule with its meanflow r sequence
    bucket_map = official.BucketMap(official.SizeMap["480p"], official.SizeMap["720p"], 16, 16)
    sizes = [[list(low), list(high)] for low, high in bucket_map.hr_bucket_map.items()]
    scheduler = official.Scheduler(shift=SR_SHIFT, reverse=True, solver="euler")
    scheduler.set_timesteps(SR_STEPS)
    timesteps = scheduler.timesteps.float()
    r_timesteps = torch.cat([timesteps[1:], torch.zeros(1)])

    # 2. the latent upsampler after the bilinear resize
    upsampler = official.Upsampler(**UPSAMPLER_KWARGS).eval()
    write_order(
        args.out / "tiny_sr_upsampler_param_order.txt", seeded_weights(upsampler, UPSAMPLER_SEED, UPSAMPLER_SCALE)
    )
    generator = torch.Generator().manual_seed(INPUT_SEED)
    low = torch.randn(1, LATENT_CHANNELS, FRAMES, *LOW_GRID, generator=generator)
    frames = low.permute(0, 2, 1, 3, 4).flatten(0, 1)
    resized = F.interpolate(frames, size=HIGH_GRID, mode="bilinear", align_corners=False)
    resized = resized.unflatten(0, (1, FRAMES)).permute(0, 2, 1, 3, 4).contiguous()
    upsampled = upsampler(resized)
    io.update(lq_low=low, lq_resized=resized, lq_upsampled=upsampled)

    # 3. the SR condition: LQ noised at strength 0.7 (global RNG, as the official pipeline), image condition
    #    on frame 0 with its mask, LQ + ones mask; and the same with the LQ part zeroed (t < 700)
    pipeline = official.Pipeline.__new__(official.Pipeline)  # only its stateless helpers are called
    pipeline.execution_device = torch.device("cpu")
    torch.manual_seed(LQ_NOISE_SEED)
    noisy_lq = pipeline.add_noise_to_lq(upsampled, SR_STRENGTH)
    torch.manual_seed(LQ_NOISE_SEED)
    lq_noise = torch.randn_like(upsampled)
    image_cond = torch.randn(1, LATENT_CHANNELS, 1, *HIGH_GRID, generator=generator)
    latents = torch.randn(1, LATENT_CHANNELS, FRAMES, *HIGH_GRID, generator=generator)
    task_mask = pipeline.get_task_mask("i2v", FRAMES)
    cond = pipeline._prepare_cond_latents("i2v", image_cond, latents, task_mask)
    condition = torch.cat([cond, pipeline._prepare_lq_cond_latents(noisy_lq)], dim=1)
    zeroed = condition.clone()
    zeroed[:, LATENT_CHANNELS + 1 : 2 * LATENT_CHANNELS + 1] = 0
    zeroed[:, 2 * LATENT_CHANNELS + 1] = 0
    io.update(lq_noise=lq_noise, lq_noisy=noisy_lq, image_cond=image_cond, noise=latents)
    io.update(condition=condition, condition_zeroed=zeroed)

    # 4. the SR transformer: two single passes (LQ kept at t=1000, LQ zeroed below 700) and the 6-step loop
    transformer = official.Transformer(**TRANSFORMER_KWARGS).eval()
    write_order(
        args.out / "tiny_sr_transformer_param_order.txt",
        seeded_weights(transformer, TRANSFORMER_SEED, TRANSFORMER_SCALE),
    )
    text = torch.randn(1, 10, 16, generator=generator)
    text_mask = torch.tensor([[1] * 7 + [0] * 3])
    byt5 = torch.randn(1, 6, 1472, generator=generator)
    byt5_mask = torch.tensor([[1] * 2 + [0] * 4])
    vision = torch.randn(1, 5, 24, generator=generator)
    io.update(text=text, text_mask=text_mask, byt5=byt5, byt5_mask=byt5_mask, vision=vision)

    def velocity(sample: torch.Tensor, cond_channels: torch.Tensor, t: torch.Tensor, r: torch.Tensor):
        hidden = torch.cat([sample, cond_channels], dim=1)
        out, _ = transformer(
            bi_inference=True,
            hidden_states=hidden,
            timestep=t.reshape(1).repeat(hidden.shape[2]),
            timestep_txt=t.reshape(1),
            text_states=text,
            text_states_2=None,
            encoder_attention_mask=text_mask,
            timestep_r=r.reshape(1),
            vision_states=vision,
            mask_type="i2v",
            guidance=None,
            return_dict=False,
            extra_kwargs={"byt5_text_states": byt5, "byt5_text_mask": byt5_mask},
        )
        return out

    io["out_first"] = velocity(latents, condition, timesteps[0], r_timesteps[0])
    late = next(index for index, t in enumerate(timesteps) if t < 1000 * SR_STRENGTH)
    io["out_late"] = velocity(latents, zeroed, timesteps[late], r_timesteps[late])
    sample = latents
    for index, t in enumerate(scheduler.timesteps):
        cond_channels = zeroed if t < 1000 * SR_STRENGTH else condition
        out = velocity(sample, cond_channels, t.float(), r_timesteps[index])
        sample = scheduler.step(out, t, sample, return_dict=False)[0]
    io["sr_latents"] = sample
    for name, tensor in io.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SystemExit(f"{name} is not finite: the official code did not run as expected")

    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in io.items()}, str(args.out / "tiny_sr_io.safetensors"))
    facts = {
        "upstream": "Tencent-Hunyuan/HY-WorldPlay",
        "commit": upstream_commit(args.official),
        "torch": torch.__version__,
        "bucket_map_480p_to_720p": sizes,
        "steps": SR_STEPS,
        "shift": SR_SHIFT,
        "strength": SR_STRENGTH,
        "timesteps": timesteps.tolist(),
        "sigmas": scheduler.sigmas.float().tolist(),
        "r_timesteps": r_timesteps.tolist(),
        "first_step_without_lq": late,
        "transformer": {key: value for key, value in TRANSFORMER_KWARGS.items()},
        "transformer_seed": TRANSFORMER_SEED,
        "transformer_scale": TRANSFORMER_SCALE,
        "upsampler": UPSAMPLER_KWARGS,
        "upsampler_seed": UPSAMPLER_SEED,
        "upsampler_scale": UPSAMPLER_SCALE,
    }
    (args.out / "sr_sizes_schedule.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(json.dumps({"out": str(args.out), "commit": facts["commit"], "tensors": sorted(io)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
