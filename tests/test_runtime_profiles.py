"""Memory profiles: estimates against the README figures, auto choice, the OOM ladder, OOM classification,
block streaming (same output, one block resident) and per-stage peaks."""

from __future__ import annotations

import pytest
import torch

from worker.runtime.memory_profiles import (
    GB,
    LADDER,
    POLICIES,
    BlockStreamer,
    PeakMemory,
    ProfileError,
    choose_profile,
    estimate_peak,
    estimate_stages,
    is_out_of_memory,
    next_profile,
    oom_hint,
)


@pytest.mark.parametrize(("sp", "readme_gb"), [(1, 72), (4, 34), (8, 28)])
def test_offload_estimate_matches_the_readme_figures(sp, readme_gb):
    # README (AR distilled, 125 frames, official offloading on): 72 / 34 / 28 GB per GPU
    assert abs(estimate_stages("offload", "ar-distilled", sp)["denoise"] / GB - readme_gb) < 1.5


def test_profiles_are_ordered_by_memory_and_guidance_doubles_the_context():
    peaks = [estimate_peak(profile, "ar-distilled", 2) for profile in LADDER]
    assert peaks == sorted(peaks, reverse=True)
    assert estimate_peak("offload", "ar", 1) > estimate_peak("offload", "ar-distilled", 1) + 27 * GB


def test_auto_takes_the_first_profile_that_fits():
    assert choose_profile("auto", "ar-distilled", 8, 80 * GB).profile == "resident"
    assert choose_profile("auto", "ar-distilled", 1, 80 * GB).profile == "offload"
    assert choose_profile("auto", "ar-distilled", 2, 40 * GB).profile == "group-offload"
    squeezed = choose_profile("auto", "ar-distilled", 1, 24 * GB)
    assert (squeezed.profile, squeezed.fits) == ("low-vram", False) and "more GPUs" in squeezed.reason
    assert choose_profile("auto", "bi", 1, None).profile == "resident"  # CPU: nothing to offload
    assert choose_profile("auto", "ar", 1, 80 * GB, scale=1e-4).profile == "resident"  # a tiny model
    explicit = choose_profile("low-vram", "ar", 8, 80 * GB)
    assert (explicit.profile, explicit.fits) == ("low-vram", True)
    with pytest.raises(ProfileError, match="unknown memory profile 'fast'"):
        choose_profile("fast", "ar", 1, None)


def test_oom_ladder_and_hint():
    assert [next_profile(profile) for profile in LADDER] == ["offload", "group-offload", "low-vram", None]
    assert (
        oom_hint("resident", 1, 4)
        == "try the offload memory profile, or more GPUs per job (sequence parallel splits the context cache), or fewer frames"
    )
    assert oom_hint("low-vram", 4, 4) == "try fewer frames"


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_block_streaming_keeps_the_output_and_one_block_at_a_time(golden_transformer_state):
    from golden_util import load_io
    from worker.models.tiny import GOLDEN_TRANSFORMER_CONFIG
    from worker.models.transformer import PromptEmbeddings, WorldPlayTransformer

    model = WorldPlayTransformer(GOLDEN_TRANSFORMER_CONFIG)
    model.load_state_dict(golden_transformer_state)
    io = load_io("tiny_transformer_io.safetensors")
    prompt = PromptEmbeddings(io["text"], io["text_mask"], io["byt5"], io["byt5_mask"], io["vision"])
    args = (io["x"], io["t"], prompt, io["viewmats"], io["Ks"], io["action"])
    with torch.no_grad():
        expected = model.forward_bi(*args)
        streamer = BlockStreamer(model.double_blocks, torch.device("cpu"))
        got = model.forward_bi(*args)
    torch.testing.assert_close(got, expected)
    # every block is fetched once per forward, in order
    assert (streamer.fetches, streamer.current) == (
        GOLDEN_TRANSFORMER_CONFIG.num_layers,
        GOLDEN_TRANSFORMER_CONFIG.num_layers - 1,
    )


def test_policies_and_peaks():
    assert POLICIES["low-vram"].vae_tiled and POLICIES["group-offload"].transformer_streamed
    assert not POLICIES["offload"].encoders_resident and POLICIES["resident"].encoders_resident
    peak = PeakMemory("cpu")
    peak.start("load")
    block = bytearray(64 * 2**20)
    peak.start("encode")
    peak.stop()
    del block
    assert peak.stages.keys() == {"load", "encode"} and peak.stages["encode"] >= peak.stages["load"] > 0


def test_the_sr_stage_adds_its_own_transformer_and_720p_working_set():
    from worker.runtime.memory_profiles import GB, SR_TRANSFORMER_BYTES, estimate_stages

    without = estimate_stages("offload", "ar-distilled", 1)
    stages = estimate_stages("offload", "ar-distilled", 1, sr=True)
    assert {key: stages[key] for key in without} == without
    # below resident the 480p transformer's blocks make room: the SR stage holds its own weights alone
    assert SR_TRANSFORMER_BYTES < stages["super-resolution"] < SR_TRANSFORMER_BYTES + 10 * GB
    resident = estimate_stages("resident", "ar-distilled", 1, sr=True)
    assert resident["super-resolution"] > stages["super-resolution"] + 30 * GB  # both transformers, the encoders
    streamed = estimate_stages("group-offload", "ar-distilled", 1, sr=True)
    assert streamed["super-resolution"] < 10 * GB
    # auto picks a profile for the whole job: a GPU where the 480p job fits resident needs a lower rung with SR
    assert choose_profile("auto", "ar-distilled", 8, 60 * GB).profile == "resident"
    assert choose_profile("auto", "ar-distilled", 8, 60 * GB, sr=True).profile == "offload"


def test_sr_placement_streams_the_sr_blocks_under_streamed_profiles(tiny_model_dir):
    from worker.pipeline.pipeline import WorldPlayPipeline
    from worker.runtime.memory_profiles import Placement

    pipeline = WorldPlayPipeline.from_model_dir(tiny_model_dir, "ar-distilled", device="cpu")
    placement = Placement(pipeline, POLICIES["group-offload"], torch.device("cpu"))
    assert pipeline.super_resolution is None
    placement.on_stage("super-resolution")
    assert pipeline.super_resolution is not None and placement.sr_streamer is not None
    assert placement.sr_streamer.blocks is pipeline.super_resolution.transformer.double_blocks
    # a host-memory run has nothing to park
    placement.on_stage("generate")
    assert not placement.parked
