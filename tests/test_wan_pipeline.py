"""The WAN pipeline on the tiny WAN model directory: progress per denoising step, a cancel between steps,
and what each chunk's manifest record says (its context latents, its analytic work)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajectories import parse_pose_string
from worker.pipeline.pipeline import GenerationOptions
from worker.pipeline.rollout import StepEvent
from worldplay_cli.tiny import write_tiny_model

OPTIONS = GenerationOptions(width=64, height=32, seed=5)


class Canceled(Exception):
    """What a job's reporter raises from a step callback when the user cancels."""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from worker.pipeline.families import load_pipeline

    root = write_tiny_model(tmp_path_factory.mktemp("tiny-wan") / "model", seed=0, hub_names=False, family="wan")
    return load_pipeline(root, "wan-distilled", device="cpu")


def test_every_step_is_reported_and_every_chunk_says_its_context_and_work(pipeline):
    events: list[StepEvent] = []
    result = pipeline.generate("a red car", None, parse_pose_string("w-7"), None, OPTIONS, on_step=events.append)
    # 2 chunks x 4 distilled steps, each as it ends
    assert [(event.chunk, event.step) for event in events] == [
        (chunk, step) for chunk in (0, 1) for step in (1, 2, 3, 4)
    ]
    assert {(event.num_chunks, event.steps) for event in events} == {(2, 4)}
    records = [chunk.as_dict() for chunk in result.chunks]
    assert [record["context"] for record in records] == [[], [0, 1, 2, 3]]
    # the second chunk also rebuilds its 4 context latents: more work than the first
    assert 0 < records[0]["tflop"] < records[1]["tflop"]
    assert records[1]["context_s"] > 0 and result.stages["context"] == pytest.approx(
        sum(r.context_s for r in result.chunks)
    )
    assert pipeline.transformer.attention_backend_in_use() == "sdpa"


def test_a_cancel_at_a_step_stops_the_chunk_and_keeps_no_partial_video(pipeline, tmp_path: Path):
    from worker.video import write_video

    output = tmp_path / "video.mp4"
    seen: list[StepEvent] = []

    def cancel_at_the_second_step(event: StepEvent) -> None:
        seen.append(event)
        if event.step == 2:
            raise Canceled

    with pytest.raises(Canceled):
        pipeline.generate(
            "a red car", None, parse_pose_string("w-7"), output, OPTIONS,
            on_step=cancel_at_the_second_step, write_video=write_video,
        )  # fmt: skip
    # the first chunk stopped after its second step: nothing more ran, nothing was written
    assert [(event.chunk, event.step) for event in seen] == [(0, 1), (0, 2)]
    assert not output.exists() and list(tmp_path.iterdir()) == []
