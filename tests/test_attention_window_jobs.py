"""The attention sink + local window from `worldplay generate` and `worldplay play` to the rollout: refused
at the CLI when it cannot be served, carried by the job's spec to the worker (its manifest records it and
each chunk's context is the window), and an open-ended stream with one holds bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROMPT = "a quiet street"


@pytest.fixture
def output_root(worldplay_env) -> Path:
    return Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (("--sink-latents", "2", "--local-window-latents", "12"), "must be whole 4-latent chunks", "--sink-latents 4"),
        (("--sink-latents", "8", "--local-window-latents", "8"), "the sink smaller than the window", "--sink-latents"),
        (("--sink-latents", "-4", "--local-window-latents", "8"), "sink_latents -4", "--sink-latents 4"),
        (("--sink-latents", "4"), "set both sink_latents and local_window_latents", "--local-window-latents 12"),
        (("--engine", "preview", "--sink-latents", "4", "--local-window-latents", "12"), "engine preview", "native"),
        (("--variant", "bi", "--pose", "w-31", "--sink-latents", "16", "--local-window-latents", "32"), "bidirectional", "drop"),
        (("--variant", "wan-distilled", "--sink-latents", "4", "--local-window-latents", "12"), "keeps no attention window", "drop"),
    ],
)  # fmt: skip
def test_generate_refuses_an_attention_window_it_cannot_serve(cli, redis_conn, output_root, args, message, hint):
    base = ("generate", "--queue", "--prompt", PROMPT, "--engine", "native", "--variant", "ar-distilled")
    code, _, err = cli(*base, "--pose", "w-15", *args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and hint in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not output_root.exists() or not any(output_root.iterdir())


def test_play_refuses_a_bad_attention_window_before_a_session_starts(cli, redis_conn, output_root):
    code, _, err = cli("play", "--graphics", "halfblock", "--engine", "native", "--prompt", PROMPT,
                       "--sink-latents", "4", "--local-window-latents", "6")  # fmt: skip
    assert code == 2 and err.startswith("error: ") and "whole 4-latent chunks" in err and err.count("\n") == 1, err
    assert not output_root.exists() or not any(output_root.iterdir())


def test_the_window_is_a_field_of_both_specs_and_becomes_the_pipeline_option(cli, tmp_path):
    from worker.models.transformer import AttentionWindow
    from worker.runtime.render import generation_options, window_facts
    from worldplay_cli.contract.play import PlaySpec
    from worldplay_cli.contract.specs import JobSpec

    code, out, err = cli("generate", "--dry-run", "--prompt", PROMPT, "--engine", "native", "--pose", "w-15",
                         "--sink-latents", "4", "--local-window-latents", "12")  # fmt: skip
    assert code == 0, err
    spec = JobSpec.model_validate(json.loads(out))
    assert (spec.sink_latents, spec.local_window_latents) == (4, 12)
    options = generation_options(spec, None)
    assert options.attention_window == AttentionWindow(4, 12)
    assert window_facts(options) == {"attention_window": {"sink_latents": 4, "local_window_latents": 12}}
    unwindowed = spec.model_copy(update={"sink_latents": None, "local_window_latents": None})
    assert generation_options(unwindowed, None).attention_window is None
    play = PlaySpec.model_validate(
        {**spec.model_dump(include={"prompt", "image", "engine", "variant", "steps", "guidance", "width", "height"}),
         "timeout_s": 60, "sink_latents": 0, "local_window_latents": 8}
    )  # fmt: skip
    assert generation_options(play, None).attention_window == AttentionWindow(0, 8)
    with pytest.raises(ValueError, match="engine preview keeps no attention window"):
        PlaySpec.model_validate({**play.model_dump(), "engine": "preview"})


@pytest.mark.slow
def test_a_queued_tiny_ar_job_with_a_window_runs_on_it_and_its_manifest_says_so(
    worldplay_env, start_worker, tiny_model_dir, cli
):
    from spine_util import wait_until

    worker = start_worker("generate", env={"WORLDPLAY_MODEL_DIR": str(tiny_model_dir)})
    code, out, err = cli("generate", "--queue", "--json", "--engine", "native", "--variant", "ar-distilled",
                         "--pose", "w-11", "--prompt", PROMPT, "--width", "32", "--height", "32",
                         "--sink-latents", "4", "--local-window-latents", "8")  # fmt: skip
    assert code == 0, err
    manifest_path = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"]) / json.loads(out)["job_id"] / "manifest.json"

    def ended() -> dict | None:
        if not manifest_path.is_file():
            return None
        manifest = json.loads(manifest_path.read_text())
        return manifest if manifest["status"] != "running" else None

    manifest = wait_until(ended, timeout=180, what="the job's end")
    assert manifest["status"] == "finished", worker.log_path.read_text()
    assert (manifest["spec"]["sink_latents"], manifest["spec"]["local_window_latents"]) == (4, 8)
    engine = manifest["engine"]
    assert engine["attention_window"] == {"sink_latents": 4, "local_window_latents": 8}
    # 12 latents in 4-latent chunks, a window of the sink and the chunk itself: the last chunk sees the
    # sink only (the memory would have taken all 8 earlier latents)
    assert [chunk["context"] for chunk in engine["chunks"]] == [[], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert manifest["video"]["frames"] == 45


@pytest.mark.slow
def test_an_unbounded_stream_with_a_window_holds_bounded_memory(tiny_pipelines, monkeypatch):
    """16 chunks: every context K/V cache holds at most local_window - chunk latents, the stream keeps the
    sink chunk and the latest one only, and the process holds exactly the same tensor bytes after 6 and
    after 16 chunks (without a window, each chunk adds its latents and cameras: test_play_native)."""
    from worker.models.transformer import AttentionWindow
    from worker.pipeline.pipeline import GenerationError, GenerationOptions
    from worker.pipeline.stream import ARStream, live_tensor_bytes

    pipeline = tiny_pipelines("ar-distilled")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(90, 60, 3), dtype=np.uint8))
    transformer = pipeline.transformer
    caches = []
    forward_context = transformer.forward_context

    def recording(*args, **kwargs):
        cache = forward_context(*args, **kwargs)
        caches.append((cache.context_frames, sum(key.nbytes for key in cache.context_keys)))
        return cache

    monkeypatch.setattr(transformer, "forward_context", recording)
    stream = ARStream(pipeline, image, GenerationOptions(width=16, height=32, attention_window=AttentionWindow(4, 12)))
    count = stream.chunk_latents
    c2w = np.repeat(np.eye(4)[None], count, 0)
    intrinsics = np.repeat(np.array([[[0.5, 0, 0.5], [0, 0.9, 0.5], [0, 0, 1]]]), count, 0)
    measured = {}
    for index in range(16):
        c2w = c2w.copy()
        c2w[:, 2, 3] += 0.1 * np.arange(1, count + 1)
        chunk = stream.step(c2w, intrinsics, np.full(count, 1), PROMPT)
        assert chunk.result.context == AttentionWindow(4, 12).context_latents(index * count, count)
        assert stream.kept_chunks == ([0, index] if index else [0])
        if index + 1 in (6, 16):
            measured[index + 1] = live_tensor_bytes()
    assert max(frames for frames, _ in caches) == 8 and len({size for frames, size in caches if frames == 8}) == 1
    assert measured[16] == measured[6]
    with pytest.raises(GenerationError, match="multiples of the 4-latent chunk"):
        ARStream(pipeline, image, GenerationOptions(width=16, height=32, attention_window=AttentionWindow(2, 12)))
