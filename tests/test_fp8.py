"""FP8 weights of the transformer's blocks (`--weights fp8`, worker/models/fp8.py): what is stored, how much
memory it saves, and how far the passes move from full precision.

The storage and upcast path is what runs on any device and is tested here; the `torch._scaled_mm` path needs a
Hopper-class CUDA GPU, and its one test below runs only there.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golden_util import load_io
from transformer_util import golden_prompt, load_golden_model
from worker.models.fp8 import FP8_DTYPE, FP8Linear, parameter_bytes, quantize, quantize_blocks, scaled_mm_usable

# Relative L2 error of the model's outputs with FP8 block weights, against the fp32 model (docs/performance.md:
# measured 0.6 %, about what bf16 weights and activations cost, 0.5 %).
FP8_OUTPUT_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def io():
    return load_io("tiny_transformer_io.safetensors")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference).norm() / reference.norm()).item()


def test_each_row_is_rounded_to_fp8_on_its_own_scale():
    generator = torch.Generator().manual_seed(0)
    # rows five orders of magnitude apart, and a row of zeros
    weight = torch.randn(4, 64, generator=generator) * torch.tensor([[1e-3], [1.0], [1e2], [0.0]])
    values, scale = quantize(weight)
    assert values.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.shape == (4,)
    # each row's largest magnitude is the format's largest value
    assert torch.equal(values[:3].float().abs().amax(dim=1), torch.full((3,), 448.0))
    restored = values.float() * scale[:, None]
    # 3 mantissa bits: within 1/16 of each value, plus half the subnormal step (2^-9 of the scale) near zero
    assert ((restored - weight).abs() <= weight.abs() / 16 + scale[:, None] * 2**-10).all()
    assert scale[3] == 1.0 and not restored[3].any()


def test_an_fp8_linear_computes_the_linear_of_its_rounded_weight():
    """The per-channel scale goes on the output columns instead of the weight: the same product."""
    generator = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 48)
    x = torch.randn(3, 5, 64, generator=generator)
    fp8 = FP8Linear.from_linear(linear)
    rounded = fp8.weight.float() * fp8.weight_scale[:, None]
    torch.testing.assert_close(fp8(x), F.linear(x, rounded, linear.bias), atol=1e-5, rtol=1e-5)


def test_fp8_blocks_hold_a_quarter_of_fp32_and_half_of_bf16_and_nothing_else_changes(golden_transformer_state):
    model = load_golden_model(golden_transformer_state)
    outside = {name: tensor.clone() for name, tensor in model.state_dict().items() if "double_blocks" not in name}
    linears = sum(isinstance(module, nn.Linear) for module in model.double_blocks.modules())
    report = quantize_blocks(model)
    assert report["layers"] == linears > 0 and report["matmul"] == "upcast"
    assert not any(isinstance(module, nn.Linear) for module in model.double_blocks.modules())
    assert all(
        layer.weight.dtype == FP8_DTYPE for layer in model.double_blocks.modules() if isinstance(layer, FP8Linear)
    )
    assert report["bytes_after"] == parameter_bytes(model.double_blocks)
    # weights 4 -> 1 byte; biases, norms and one fp32 scale per output channel stay: 0.27 at this tiny width
    assert 0.25 < report["bytes_after"] / report["bytes_before"] < 0.3
    kept = model.state_dict()
    assert all(torch.equal(kept[name], tensor) for name, tensor in outside.items())

    bf16 = load_golden_model(golden_transformer_state).to(torch.bfloat16)
    bf16_report = quantize_blocks(bf16)
    assert 0.5 < bf16_report["bytes_after"] / bf16_report["bytes_before"] < 0.55


@torch.no_grad()
def test_fp8_passes_stay_within_the_documented_tolerance_of_fp32(golden_transformer_state, io):
    x, viewmats, ks, action = io["x"], io["viewmats"], io["Ks"], io["action"]

    def passes(model):
        bi = model.forward_bi(x, io["t"], golden_prompt(io), viewmats, ks, action)
        cache = model.forward_text(golden_prompt(io), text_timestep=0.0)
        cache = model.forward_context(x[:, :, :2], viewmats[:, :2], ks[:, :2], action[:, :2], cache, timestep=14.0)
        return bi, model.forward_chunk(x[:, :, 2:], io["t"], viewmats[:, 2:], ks[:, 2:], action[:, 2:], cache)

    reference = passes(load_golden_model(golden_transformer_state))
    model = load_golden_model(golden_transformer_state)
    quantize_blocks(model)
    for value, expected in zip(passes(model), reference):
        error = relative_error(value, expected)
        # rounded, so not equal; close, within the tolerance
        assert 1e-4 < error < FP8_OUTPUT_TOLERANCE


@pytest.mark.skipif(
    not scaled_mm_usable("cuda"), reason="GPU-only: needs a CUDA GPU of compute capability >= 9.0 (torch._scaled_mm)"
)
def test_scaled_mm_matmul_is_close_to_the_upcast_one_on_a_hopper_gpu():
    generator = torch.Generator().manual_seed(2)
    linear = nn.Linear(256, 128).to("cuda", torch.bfloat16)
    x = torch.randn(32, 256, generator=generator).to("cuda", torch.bfloat16)
    upcast = FP8Linear.from_linear(linear, "upcast")(x)
    scaled = FP8Linear.from_linear(linear, "scaled_mm")(x)
    # the activations are rounded to FP8 too
    assert relative_error(scaled, upcast.float()) < 0.05
