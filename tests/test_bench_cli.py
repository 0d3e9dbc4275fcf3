"""`worldplay bench`: a real native job on a tiny model, read back as stage timings, steady speed and FLOPs."""

from __future__ import annotations

import json

import pytest

from worldplay_cli.bench import device_peak_tflops


def test_device_peaks_are_looked_up_by_the_name_torch_reports():
    assert device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert device_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert device_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert device_peak_tflops("x86_64") is None


def test_bad_bench_requests_are_one_line_errors_before_anything_runs(cli):
    code, _, err = cli("bench", "--tiny", "--variant", "nope")
    assert code == 2 and err.count("\n") == 1 and "unknown variant 'nope'" in err and "ar-distilled" in err
    code, _, err = cli("bench", "--tiny", "--chunks", "0")
    assert code == 2 and err.count("\n") == 1 and "--chunks 0" in err


@pytest.mark.slow
def test_bench_on_the_tiny_model_reports_every_stage_and_the_work_per_chunk(cli):
    code, out, err = cli(
        "bench", "--tiny", "--variant", "ar-distilled", "--chunks", "2", "--peak-tflops", "1", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert [chunk["index"] for chunk in report["chunks"]] == [0, 1] and report["steady_chunks"] == [1]
    assert report["chunks"][1]["context"] == [0, 1, 2, 3]
    assert report["variant"] == "ar-distilled" and report["steps"] == 4 and report["gpus"] == 1
    assert report["load_s"] > 0 and report["encode_s"] > 0 and report["seconds_per_chunk"] > 0
    # chunk 1 attends to its 4 context latents as well: more work than chunk 0
    assert 0 < report["chunks"][0]["tflop"] < report["chunks"][1]["tflop"] == report["tflop_per_chunk"]
    assert report["achieved_tflops"] == pytest.approx(report["tflop_per_chunk"] / report["seconds_per_chunk"])
    assert report["peak_fraction"] == pytest.approx(report["achieved_tflops"])  # of the 1 TFLOP/s given
    assert report["frames_per_second"] == pytest.approx(16 / report["seconds_per_chunk"])
    assert {"load", "encode", "generate"} <= set(report["peak_memory_bytes"])


@pytest.mark.slow
def test_bench_on_the_tiny_wan_model_reports_the_work_per_chunk(cli):
    code, out, err = cli(
        "bench", "--tiny", "--variant", "wan-distilled", "--chunks", "2", "--peak-tflops", "1", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    # frames of the family's sides (multiples of 32), chunks of 4 latents
    assert (report["variant"], report["width"], report["height"], report["steps"]) == ("wan-distilled", 128, 64, 4)
    assert report["chunks"][1]["context"] == [0, 1, 2, 3] and report["steady_chunks"] == [1]
    assert 0 < report["chunks"][0]["tflop"] < report["chunks"][1]["tflop"] == report["tflop_per_chunk"]
    assert report["peak_fraction"] == pytest.approx(report["tflop_per_chunk"] / report["seconds_per_chunk"])
