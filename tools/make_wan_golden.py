"""Write the WAN-5B transformer and rollout golden tensors (tests/golden/wan_*) by running the official code.

    python tools/make_wan_golden.py --official PATH/TO/HY-WorldPlay [--out tests/golden]

Not part of the package and never run by the tests: it imports the official `wan/` modules (the WorldPlay
`WanTransformer3DModel`, the `WanPipeline` of `pipeline_wan_w_mem_relative_rope`, `select_mem_frames_wan`)
and hyvideo's point cloud from the checkout the user points to, at run time, so nothing upstream is copied
into this repository. It runs them on CPU in fp32 with tiny seeded weights and writes:

- `wan_5b_param_shapes.txt`: every parameter of the released architecture (built on the meta device with
  the released sizes and `add_discrete_action_parameters()`), name and shape in registration order;
- `wan_tiny_param_order.txt`: the same for the tiny architecture; its weights are
  `randn(shape, generator=g) * scale` drawn in that order, so the tests regenerate them;
- `wan_tiny_io.safetensors`: transformer passes and two short rollouts (see tests/golden/README.md);
- `wan_schedule_memory.json`: the 4-step schedule, the trajectories' memory selections, the tiny sizes.

What the official modules need and a CPU process lacks is stood in for, each with its single-process
meaning: SageAttention's kernel by the SDPA call the official code keeps commented out beside it; the
sequence-parallel helpers by their world-size-1 values (hyvideo sets WORLD_SIZE=1 when it is unset, as
under a one-GPU torchrun, so the official single-GPU path runs); `torch.compile` by the plain function;
CUDA synchronisation and NVTX ranges by no-ops; the parallel VAE decode helpers, never called, by errors.
The official pipeline slices its RoPE table by a hard-coded 880 tokens per latent (704x1280); the tiny
grid has fewer, so the transformer's token offsets are rescaled from 880 to the tiny count per latent on
the way in, which changes no arithmetic. The image latent of the i2v rollout comes from a stand-in VAE
whose posterior sample is a stored tensor (statistics 0 and 1, so normalisation is the identity).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from golden_common import seeded_weights, upstream_commit, write_order

TINY_SEED, TINY_SCALE = 31, 0.05
INPUT_SEED = 32
NOISE_SEED_T2V, NOISE_SEED_I2V = 33, 34
POINTS_SEED = 0  # the global RNG seed before the pipeline draws its point cloud (our seeded cloud's seed)
RELEASED = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=24,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=14336,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
# WanConfig.tiny() of worker/models/wan/transformer.py
TINY = dict(
    RELEASED,
    num_attention_heads=2,
    attention_head_dim=24,
    in_channels=8,
    out_channels=8,
    text_dim=16,
    freq_dim=32,
    ffn_dim=96,
    num_layers=2,
)
TEXT_ROWS, TEXT_VALID = 512, 7
GRID = (4, 6)  # latent grid h x w: 2 x 3 tokens per latent
OFFICIAL_TOKENS_PER_LATENT = 880
ROLLOUT_LATENTS = 28  # 7 chunks: the memory selects clips at chunk starts 20 and 24
CONTEXT_TIMESTEP = 14.0


def import_official(checkout: Path):
    sys.path[:0] = [str(checkout), str(checkout / "wan")]
    import diffusers.models  # noqa: F401  (decides which optional packages exist before any stand-in does)
    import diffusers.pipelines.pipeline_utils  # noqa: F401

    def stand_in(name: str, **attributes):
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module

    def never_called(*args, **kwargs):
        raise RuntimeError("the parallel VAE decode is not part of the golden run")

    stand_in(
        "sageattention",
        sageattn=lambda q, k, v, tensor_layout="HND", is_causal=False: F.scaled_dot_product_attention(q, k, v),
    )
    stand_in("distributed")
    stand_in(
        "distributed.communication_op",
        all_to_all_sp=lambda tensor, scatter_dim=2, gather_dim=1: tensor,
        sequence_model_parallel_all_gather=lambda tensor, dim=-1: tensor,
    )
    stand_in(
        "distributed.parallel_state",
        get_sp_world_size=lambda: 1,
        get_sp_parallel_rank=lambda: 0,
        get_sp_parallel_local_rank=lambda: 0,
    )
    stand_in("models.par_vae.tools", distribute_data_to_gpus=never_called, gather_results=never_called)
    compile_function = torch.compile
    torch.compile = lambda model=None, **kwargs: model if model is not None else (lambda function: function)
    try:
        import inference.pipeline_wan_w_mem_relative_rope as pipeline_module
        from hyvideo.utils.retrieval_context import generate_points_in_sphere
        from models.dits.arwan_w_action_w_mem_relative_rope import WanTransformer3DModel
        from models.utils import select_mem_frames_wan
    finally:
        torch.compile = compile_function
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.cuda.nvtx.range_push = lambda *args, **kwargs: None
    torch.cuda.nvtx.range_pop = lambda *args, **kwargs: None
    return types.SimpleNamespace(
        Transformer=WanTransformer3DModel,
        pipeline_module=pipeline_module,
        select_mem_frames_wan=select_mem_frames_wan,
        generate_points_in_sphere=generate_points_in_sphere,
    )


def build(official, sizes: dict, device: str | None = None):
    with torch.device(device or "cpu"):
        model = official.Transformer(**sizes)
        model.add_discrete_action_parameters()
    return model.eval()


def parameter_shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(parameter.shape)) for name, parameter in model.named_parameters()]


def yaw_c2w(yaw_degrees: float, position: list[float]) -> torch.Tensor:
    """Camera-to-world (OpenCV axes, z forward) turned by `yaw` about the vertical axis, at `position`."""
    angle = math.radians(yaw_degrees)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[0, 0], c2w[0, 2], c2w[2, 0], c2w[2, 2] = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
    c2w[:3, 3] = torch.tensor(position, dtype=torch.float64)
    return c2w


def walk(yaws: list[float], step: float = 0.35) -> torch.Tensor:
    """World-to-camera [N, 4, 4] float32 of a walk that moves `step` along its forward axis every latent
    and faces `yaws[i]` at latent i."""
    position = torch.zeros(3, dtype=torch.float64)
    w2c = []
    for yaw in yaws:
        c2w = yaw_c2w(yaw, position.tolist())
        w2c.append(torch.linalg.inv(c2w))
        position = position + step * c2w[:3, 2]
    return torch.stack(w2c).float()


def rollout_yaws() -> list[float]:
    """28 latents facing 0°, 90°, 90°, 45°, 0°, 90°, 0° by clips of 4: the later chunks find earlier clips that
    faced their way (the memory's choice is not simply the first clip)."""
    return [yaw for yaw in (0.0, 90.0, 90.0, 45.0, 0.0, 90.0, 0.0) for _ in range(4)]


def memory_yaws() -> list[float]:
    """44 latents: a loop that comes back past where it started, for the selection alone."""
    return (
        [0.0] * 8
        + [15.0 * (i + 1) for i in range(12)]
        + [180.0] * 8
        + [180.0 + 15.0 * (i + 1) for i in range(12)]
        + [0.0] * 4
    )


def intrinsics(num_latents: int, generator: torch.Generator) -> torch.Tensor:
    """Normalised K per latent around the official (0.5051, 0.8979), jittered so fx and fy matter."""
    k = torch.zeros(num_latents, 3, 3)
    k[:, 0, 0] = 0.5051 + 0.05 * torch.rand(num_latents, generator=generator)
    k[:, 1, 1] = 0.8979 + 0.05 * torch.rand(num_latents, generator=generator)
    k[:, 0, 2] = k[:, 1, 2] = 0.5
    k[:, 2, 2] = 1.0
    return k


def run_pipeline(official, model, tokens: int, noise, text, viewmats, ks, actions, first_latent):
    """The official WanPipeline chunk by chunk (distilled 4-step path, memory on, context window 16);
    returns the latents and the memory selection of every chunk."""
    module = official.pipeline_module
    channels = noise.shape[1]

    class Posterior:
        def sample(self):
            return first_latent

    class StandInVAE(torch.nn.Module):
        dtype = torch.float32
        config = types.SimpleNamespace(
            latents_mean=[0.0] * channels,
            latents_std=[1.0] * channels,
            z_dim=channels,
            scale_factor_temporal=4,
            scale_factor_spatial=16,
        )

        def encode(self, image, return_dict=False):
            return (Posterior(),)

    class GoldenPipeline(module.WanPipeline):
        _execution_device = torch.device("cpu")
        device = torch.device("cpu")

        def resize_center_crop_to_tensor(self, image_path, target_size):
            return torch.zeros(3, target_size[1], target_size[0])

        def init_decode_state(self, all_latents, chunk_i):
            """Decoding is not part of the golden run."""

    from diffusers.schedulers import FlowMatchEulerDiscreteScheduler

    forward = model.forward

    def rescaled_forward(*args, **kwargs):
        for key in ("current_start", "current_end"):
            kwargs[key] = kwargs[key] // OFFICIAL_TOKENS_PER_LATENT * tokens
        return forward(*args, **kwargs)

    model.forward = rescaled_forward
    selections: list[list[int]] = []
    select = module.select_mem_frames_wan

    def recording_select(*args, **kwargs):
        chosen = select(*args, **kwargs)
        selections.append(list(chosen))
        return chosen

    module.select_mem_frames_wan = recording_select
    try:
        pipeline = GoldenPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=StandInVAE(),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            transformer=model,
        )
        num_latents = noise.shape[2]
        torch.manual_seed(POINTS_SEED)
        for chunk in range(num_latents // 4):
            start, end = 4 * chunk, 4 * chunk + 4
            pipeline(
                prompt_embeds=text,
                height=GRID[0] * 16,
                width=GRID[1] * 16,
                num_frames=4 * num_latents - 3,
                guidance_scale=1.0,
                few_step=True,
                first_chunk_size=4,
                return_dict=False,
                image_path="image.png" if first_latent is not None else None,
                use_memory=True,
                context_window_length=16,
                chunk_i=chunk,
                viewmats=viewmats[None, start:end],
                Ks=ks[None, start:end],
                action=actions[None, start:end].float(),
                output_type="latent",
                latents=noise.clone(),
            )
        return pipeline.ctx["latents"].clone(), selections, pipeline.ctx["timesteps"].tolist()
    finally:
        model.forward = forward
        module.select_mem_frames_wan = select


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of Tencent-Hunyuan/HY-WorldPlay")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "golden")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    official = import_official(args.official.resolve())
    torch.set_grad_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    io: dict[str, torch.Tensor] = {}

    # 1. the released architecture's parameters (meta device) and the tiny one's, with its seeded weights
    write_order(args.out / "wan_5b_param_shapes.txt", parameter_shapes(build(official, RELEASED, "meta")))
    model = build(official, TINY)
    write_order(args.out / "wan_tiny_param_order.txt", seeded_weights(model, TINY_SEED, TINY_SCALE))
    channels, tokens = TINY["in_channels"], (GRID[0] // 2) * (GRID[1] // 2)

    # 2. inputs: UMT5-like text (7 valid rows, the rest zero as the official prompt encoding pads), a walk
    generator = torch.Generator().manual_seed(INPUT_SEED)
    text = torch.zeros(1, TEXT_ROWS, TINY["text_dim"])
    text[:, :TEXT_VALID] = torch.randn(1, TEXT_VALID, TINY["text_dim"], generator=generator)
    viewmats = walk(rollout_yaws())
    ks = intrinsics(ROLLOUT_LATENTS, generator)
    actions = torch.randint(0, 81, (ROLLOUT_LATENTS,), generator=generator)
    io.update(text=text, viewmats=viewmats, intrinsics=ks, actions=actions)

    # 3. single passes: a context of 6 clean latents (cache at RoPE time 0..5, t = 14) then a chunk of 4 at
    #    RoPE time 6..9 and t = 888.8889 attending to [cache, itself]; and the i2v first chunk without a
    #    cache, timesteps [14, t, t, t]
    context = torch.randn(1, channels, 6, *GRID, generator=generator)
    chunk = torch.randn(1, channels, 4, *GRID, generator=generator)
    context_frames, chunk_frames = [0, 1, 2, 5, 6, 7], [8, 9, 10, 11]
    cache = model(
        hidden_states=context,
        timestep=torch.full((6,), CONTEXT_TIMESTEP),
        encoder_hidden_states=text,
        return_dict=False,
        current_start=0,
        current_end=6 * tokens,
        kv_cache=[{"k": None, "v": None} for _ in range(TINY["num_layers"])],
        is_cache=True,
        window_frames=ROLLOUT_LATENTS,
        viewmats=viewmats[None, context_frames],
        Ks=ks[None, context_frames],
        action=actions[None, context_frames].float(),
    )
    t = 888.8889  # the third step of the distilled schedule
    out_cached = model(
        hidden_states=chunk,
        timestep=torch.full((4,), t),
        encoder_hidden_states=text,
        return_dict=False,
        current_start=6 * tokens,
        current_end=10 * tokens,
        kv_cache=cache,
        is_cache=False,
        window_frames=ROLLOUT_LATENTS,
        viewmats=viewmats[None, chunk_frames],
        Ks=ks[None, chunk_frames],
        action=actions[None, chunk_frames].float(),
    )[0]
    out_first = model(
        hidden_states=chunk,
        timestep=torch.tensor([CONTEXT_TIMESTEP, t, t, t]),
        encoder_hidden_states=text,
        return_dict=False,
        current_start=0,
        current_end=4 * tokens,
        kv_cache=[{"k": None, "v": None} for _ in range(TINY["num_layers"])],
        is_cache=False,
        window_frames=ROLLOUT_LATENTS,
        viewmats=viewmats[None, :4],
        Ks=ks[None, :4],
        action=actions[None, :4].float(),
    )[0]
    io.update(context_latents=context, chunk_latents=chunk, out_cached=out_cached, out_first=out_first)
    io.update(cache0_k=cache[0]["k"], cache0_v=cache[0]["v"])

    # 4. rollouts of 7 chunks through the official pipeline: t2v, and i2v with a stored image latent
    noise_t2v = torch.randn(
        1, channels, ROLLOUT_LATENTS, *GRID, generator=torch.Generator().manual_seed(NOISE_SEED_T2V)
    )
    noise_i2v = torch.randn(
        1, channels, ROLLOUT_LATENTS, *GRID, generator=torch.Generator().manual_seed(NOISE_SEED_I2V)
    )
    first_latent = torch.randn(1, channels, 1, *GRID, generator=generator)
    rollout_t2v, selections_t2v, timesteps = run_pipeline(
        official, model, tokens, noise_t2v, text, viewmats, ks, actions, None
    )
    rollout_i2v, selections_i2v, _ = run_pipeline(
        official, model, tokens, noise_i2v, text, viewmats, ks, actions, first_latent
    )
    io.update(first_latent=first_latent, rollout_t2v=rollout_t2v, rollout_i2v=rollout_i2v)
    for name, tensor in io.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SystemExit(f"{name} is not finite: the official code did not run as expected")

    # 5. the memory rule alone on a longer loop, every chunk start from 16 on, with the seeded point cloud
    torch.manual_seed(POINTS_SEED)
    points = official.generate_points_in_sphere(50000, 8.0)
    loop = walk(memory_yaws())
    memory = {
        str(start): official.select_mem_frames_wan(
            loop.numpy(), start, memory_frames=16, temporal_context_size=12, pred_latent_size=4, points_local=points
        )
        for start in range(16, loop.shape[0], 4)
    }

    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in io.items()}, str(args.out / "wan_tiny_io.safetensors"))
    facts = {
        "upstream": "Tencent-Hunyuan/HY-WorldPlay",
        "commit": upstream_commit(args.official),
        "torch": torch.__version__,
        "tiny": {key: list(value) if isinstance(value, tuple) else value for key, value in TINY.items()},
        "tiny_seed": TINY_SEED,
        "tiny_scale": TINY_SCALE,
        "noise_seeds": {"t2v": NOISE_SEED_T2V, "i2v": NOISE_SEED_I2V},
        "grid": list(GRID),
        "text_rows": TEXT_ROWS,
        "text_valid_rows": TEXT_VALID,
        "timesteps": timesteps,
        "rollout_memory": {"t2v": selections_t2v, "i2v": selections_i2v},
        "loop_w2c": loop.tolist(),
        "loop_memory": memory,
    }
    (args.out / "wan_schedule_memory.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(json.dumps({"out": str(args.out), "commit": facts["commit"], "tensors": sorted(io)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
