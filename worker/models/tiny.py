"""Write a tiny random WorldPlay transformer in the official model-directory layout (tests, CPU smoke runs).

    <root>/transformer/480p_i2v/{config.json, diffusion_pytorch_model.safetensors}   base weights
    <root>/{bidirectional_model,ar_model,ar_rl_model,ar_distilled_action_model}/diffusion_pytorch_model.safetensors
    <root>/scheduler/scheduler_config.json
    <root>/transformer/720p_sr_distilled, <root>/upsampler/720p_sr_distilled     the SR stage (`write_tiny_sr`)

Weights are `randn(shape) * scale` from one seeded CPU generator in parameter-registration order, which
is the official order, so `write_tiny_transformer(root, seed=1, scale=0.05, config=<golden config>)` writes
the golden tiny weights bit for bit. The four action checkpoints hold the same full state dict; the base
weights are drawn from the next seed and lack the action parameters, as the real base weights do.
`scale=None` writes the modules' own initialisation instead (PyTorch's Linear init, unit norm weights):
what a model trained from scratch starts from. With every weight at 0.05 the query/key norms make
attention near uniform, and a tiny model trained from there learns the scenes' look long before it learns
to use the actions (`bench/action_following.py`).
The default widths fit `worker.pipeline.tiny_encoders` (text 16, vision 24, byT5 1472) and
`worker.models.tiny_vae` (4 latent channels).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from worker.models.checkpoint import (
    ACTION_CHECKPOINT_DIRS,
    CONFIG_NAME,
    TRANSFORMER_DIR,
    WEIGHTS_NAME,
    is_action_parameter,
)
from worker.models.scheduler import NUM_TRAIN_TIMESTEPS, SCHEDULER_CONFIG_NAME
from worker.models.transformer import WorldPlayTransformer, WorldPlayTransformerConfig
from worker.models.upsampler import LatentUpsampler, UpsamplerConfig
from worldplay_cli.contract.layout import ModelLayout

# The architecture of the golden tiny weights (tests/golden/README.md), whose byT5 mapper keeps the
# official hidden width.
GOLDEN_TRANSFORMER_CONFIG = WorldPlayTransformerConfig(
    in_channels=4,
    out_channels=4,
    hidden_size=64,
    num_heads=2,
    num_layers=2,
    rope_axes_dims=(8, 12, 12),
    text_states_dim=16,
    vision_states_dim=24,
)
# The tiny model: the golden architecture with a narrow byT5 mapper, which is most of the golden weights.
TINY_TRANSFORMER_CONFIG = replace(GOLDEN_TRANSFORMER_CONFIG, byt5_hidden_size=64)
# Its SR stage: the same widths as the released SR checkpoint is to the 480p one (input channels as given:
# latents | image cond + mask | LQ + ones; meanflow; no action parameters) and a small upsampler.
TINY_SR_TRANSFORMER_CONFIG = replace(
    TINY_TRANSFORMER_CONFIG,
    in_channels=3 * TINY_TRANSFORMER_CONFIG.in_channels + 2,
    concat_condition=False,
    use_meanflow=True,
    action_parameters=False,
)
TINY_UPSAMPLER_CONFIG = UpsamplerConfig(
    in_channels=TINY_TRANSFORMER_CONFIG.out_channels,
    out_channels=TINY_TRANSFORMER_CONFIG.out_channels,
    hidden_channels=8,
    num_blocks=2,
)


def random_state_dict(config: WorldPlayTransformerConfig, seed: int, scale: float | None) -> dict[str, torch.Tensor]:
    if scale is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {name: tensor.contiguous() for name, tensor in WorldPlayTransformer(config).state_dict().items()}
    with torch.device("meta"):
        shapes = [(name, parameter.shape) for name, parameter in WorldPlayTransformer(config).named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) * scale for name, shape in shapes}


def write_tiny_transformer(
    root: str | Path,
    seed: int = 0,
    scale: float | None = 0.05,
    config: WorldPlayTransformerConfig = TINY_TRANSFORMER_CONFIG,
) -> Path:
    """Write the transformer config, base weights, the four action checkpoints and the scheduler config
    under `root`; returns `root`."""
    from safetensors.torch import save_file

    root = Path(root)
    transformer_dir = root / TRANSFORMER_DIR
    transformer_dir.mkdir(parents=True, exist_ok=True)
    (transformer_dir / CONFIG_NAME).write_text(json.dumps(config.to_official_dict(), indent=2) + "\n")
    base = random_state_dict(config, seed + 1, scale)
    base = {name: tensor for name, tensor in base.items() if not is_action_parameter(name)}
    save_file(base, str(transformer_dir / WEIGHTS_NAME))
    full = random_state_dict(config, seed, scale)
    for directory in ACTION_CHECKPOINT_DIRS.values():
        (root / directory).mkdir(parents=True, exist_ok=True)
        save_file(full, str(root / directory / WEIGHTS_NAME))
    write_scheduler_config(root)
    return root


def write_tiny_sr(root: str | Path, seed: int = 0, scale: float | None = 0.05) -> Path:
    """Write the SR transformer (config + weights) and the latent upsampler under `root`; returns `root`."""
    from safetensors.torch import save_file

    where = ModelLayout(root)
    for directory in (where.sr_transformer_dir, where.sr_upsampler_dir):
        directory.mkdir(parents=True, exist_ok=True)
    config = {**TINY_SR_TRANSFORMER_CONFIG.to_official_dict(), "ideal_resolution": "720p"}
    (where.sr_transformer_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    weights = random_state_dict(TINY_SR_TRANSFORMER_CONFIG, seed, scale)
    save_file(weights, str(where.sr_transformer_dir / WEIGHTS_NAME))
    upsampler_config = TINY_UPSAMPLER_CONFIG.to_official_dict()
    (where.sr_upsampler_dir / CONFIG_NAME).write_text(json.dumps(upsampler_config, indent=2) + "\n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        upsampler = LatentUpsampler(TINY_UPSAMPLER_CONFIG).state_dict()
    save_file(
        {name: tensor.contiguous() for name, tensor in upsampler.items()}, str(where.sr_upsampler_dir / WEIGHTS_NAME)
    )
    return Path(root)


def write_scheduler_config(root: str | Path) -> Path:
    """`<root>/scheduler/scheduler_config.json` as shipped (its shift is overridden at inference anyway)."""
    directory = ModelLayout(root).scheduler_dir
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "_class_name": "FlowMatchDiscreteScheduler",
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "reverse": True,
        "shift": 7.0,
        "solver": "euler",
        "use_flux_shift": False,
    }
    path = directory / SCHEDULER_CONFIG_NAME
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
