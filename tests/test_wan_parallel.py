"""Sequence parallel for the WAN-5B family: two real rank processes over gloo, each running the WAN
transformer under `UlyssesAttention`, compute the rollouts one process computes (and the official one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golden_util import GOLDEN_DIR, load_io
from transformer_util import load_wan_golden_model
from worker.parallel.launch import join_ranks, spawn_ranks
from worker.pipeline.wan_rollout import wan_ar_rollout

TESTS_DIR = Path(__file__).parent
ATOL = 1e-5


def run_cases(model) -> dict[str, torch.Tensor]:
    """The rollouts sequence parallelism must reproduce, on `model` (whatever its attention processor)."""
    io = load_io("wan_tiny_io.safetensors")
    seeds = json.loads((GOLDEN_DIR / "wan_schedule_memory.json").read_text())["noise_seeds"]
    cameras = {"viewmats": io["viewmats"], "intrinsics": io["intrinsics"], "action_ids": io["actions"]}
    outputs = {}
    with torch.no_grad():
        # 1. the golden i2v rollout: 4x6 latents (6 tokens per latent, 3 on each rank), 7 chunks, so the
        #    context grows to 16 latents and then follows the memory rule
        outputs["i2v"] = wan_ar_rollout(
            model, text_states=io["text"], num_latents=28, height_latents=4, width_latents=6,
            first_latent=io["first_latent"], generator=torch.Generator().manual_seed(seeds["i2v"]), **cameras,
        )  # fmt: skip
        # 2. uneven: 2x6 latents (3 tokens per latent, padded to 4: the padded keys are masked), t2v
        outputs["t2v_uneven"] = wan_ar_rollout(
            model, text_states=io["text"], num_latents=8, height_latents=2, width_latents=6, first_latent=None,
            generator=torch.Generator().manual_seed(seeds["t2v"]),
            **{name: tensor[:8] for name, tensor in cameras.items()},
        )  # fmt: skip
    return outputs


def rank_main(out_dir: str) -> None:
    """One rank: join the group from the torchrun variables, run the cases sequence-parallel."""
    from safetensors.torch import save_file

    from worker.parallel.launch import exit_rank, init_from_env
    from worker.parallel.ulysses import UlyssesAttention

    info = init_from_env(timeout_s=30)
    model = load_wan_golden_model()
    model.set_attention_processor(UlyssesAttention(backend=model.attention_processor.backend))
    outputs = run_cases(model)
    save_file({name: tensor.contiguous() for name, tensor in outputs.items()}, f"{out_dir}/rank{info.rank}.safetensors")
    exit_rank(0)


def test_wan_rollouts_on_two_ranks_over_gloo_equal_one_process(tmp_path):
    from safetensors.torch import load_file

    command = [
        "-c",
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_wan_parallel; "
        f"test_wan_parallel.rank_main({str(tmp_path)!r})",
    ]
    processes = spawn_ranks(command, world_size=2, env={"OMP_NUM_THREADS": "1"}, log_dir=tmp_path)
    expected = run_cases(load_wan_golden_model())  # meanwhile, in this process
    codes = join_ranks(processes, timeout_s=120)
    logs = "\n".join((tmp_path / f"rank{rank}.log").read_text() for rank in range(2))
    assert codes == [0, 0], logs

    torch.testing.assert_close(expected["i2v"], load_io("wan_tiny_io.safetensors")["rollout_i2v"], atol=ATOL, rtol=ATOL)
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert set(got) == set(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, atol=ATOL, rtol=ATOL, msg=lambda m, name=name: f"{name}: {m}")


def test_a_wan_model_refuses_a_degree_that_does_not_split_its_heads():
    from worker.models.attention import AttentionProcessor

    class ThreeRanks(AttentionProcessor):
        def check_heads(self, num_heads: int) -> None:
            from worker.parallel.ulysses import check_sp_degree

            check_sp_degree(num_heads, 3)

    model = load_wan_golden_model()
    with pytest.raises(ValueError, match=r"2 attention heads to split evenly; use one of \[1, 2\]"):
        model.set_attention_processor(ThreeRanks())
    assert type(model.attention_processor) is AttentionProcessor


def test_a_native_wan_job_may_ask_for_several_gpus(cli, worldplay_env):
    code, out, err = cli(
        "generate", "--dry-run", "--json", "--engine", "native", "--gpus", "2", "--variant", "wan-distilled",
        "--prompt", "a red car", "--pose", "w-3", "--width", "64", "--height", "32",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["gpus"] == 2


def test_doctor_splits_a_wan_job_by_its_own_heads():
    from worker.doctor import recommend

    # 24 heads split over 3 GPUs (the HunyuanVideo family's 16 do not): three 14 GB GPUs serve one job
    gpus = [{"memory_bytes": 14 * 10**9}] * 3
    advice = recommend(
        {"installed": True, "gpus": gpus, "nccl_available": True}, {"installed": True}, ["wan-distilled"]
    )
    assert advice["variant"] == "wan-distilled" and advice["gpus_per_job"] == 3
    assert advice["worker_command"] == "worldplay worker --gpus 0-2"
    hunyuan = recommend(
        {"installed": True, "gpus": gpus, "nccl_available": True}, {"installed": True}, ["ar-distilled"]
    )
    assert hunyuan["gpus_per_job"] in (1, 2)


@pytest.mark.slow
def test_a_native_wan_job_on_two_ranks_through_a_real_worker_renders_what_one_rank_renders(
    cli, redis_conn, worldplay_env, start_worker, tmp_path, monkeypatch
):
    import numpy as np

    from spine_util import wait_until
    from worker.video import read_video_frames
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.tiny import write_tiny_model

    monkeypatch.setenv("WORLDPLAY_MODEL_DIR", str(write_tiny_model(tmp_path / "tiny-wan", 0, False, family="wan")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job_ids = []
    for gpus in ("2", "1"):
        code, out, err = cli(
            "generate", "--queue-name", "resident", "--engine", "native", "--variant", "wan-distilled", "--gpus", gpus,
            "--prompt", "a red car", "--pose", "w-7", "--width", "64", "--height", "64", "--image", "meadow",
        )  # fmt: skip
        assert code == 0, err
        job_ids.append(out.strip())
    worker = start_worker("resident")
    for job_id in job_ids:
        status = wait_until(
            lambda job_id=job_id: {"finished", "failed"} & {fetch_job(redis_conn, job_id).get_status().value},
            240,
            what=f"job {job_id}",
        )
        assert status == {"finished"}, (fetch_job(redis_conn, job_id).meta.get("failure"), worker.log_path.read_text())
    outputs = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    engines = [json.loads((outputs / job_id / "manifest.json").read_text())["engine"] for job_id in job_ids]
    assert [engine["sequence_parallel"] for engine in engines] == [2, 1]
    # 64x64 frames: 4x4 latents, 4 tokens per latent split 2 + 2; the second chunk has the first as context
    assert [chunk["context"] for chunk in engines[0]["chunks"]] == [[], [0, 1, 2, 3]]
    frames = [read_video_frames(outputs / job_id / "video.mp4") for job_id in job_ids]
    assert len(frames[0]) == len(frames[1]) == 29
    # the ranks only move tokens and heads between them (the rollout test above: within 1e-5 of one process)
    difference = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(*frames))
    assert difference <= 1


def test_a_native_job_asking_for_gpus_that_cannot_split_its_heads_is_refused_at_submit(cli, worldplay_env):
    small = ("--prompt", "a red car", "--pose", "w-3", "--width", "64", "--height", "32", "--dry-run")
    # WAN-5B's 24 heads split over 3 GPUs, not over 5; HunyuanVideo's 16 over neither
    code, _, err = cli("generate", "--engine", "native", "--variant", "wan-distilled", "--gpus", "3", *small)
    assert code == 0, err
    code, _, err = cli("generate", "--engine", "native", "--variant", "wan-distilled", "--gpus", "5", *small)
    assert code == 2 and err.count("\n") == 1 and "5 GPUs cannot split the 24 attention heads" in err
    assert "--gpus 1, 2, 3, 4, 6, 8, 12, 24" in err
    code, _, err = cli("generate", "--engine", "native", "--variant", "ar", "--image", "meadow", "--gpus", "3", *small)
    assert code == 2 and "3 GPUs cannot split the 16 attention heads" in err
