"""What a resident group does for a live session (`serve_session`): one open-ended AR stream on the
loaded pipeline (its family's, `worker.pipeline.families.open_stream`), a chunk per request of the work
horse, until the horse ends the session.

The horse (`worker.play.native.NativeSource`) holds the session and its player; the ranks hold the
model, the stream's latents, caches and decoder. Per request (cameras, actions, prompt of the next
chunk, relayed by the supervisor) rank 0 writes the chunk's frames to `<work_dir>/chunk-<k>.npy` (horse
and ranks share a host) and answers with the path; the horse reads and deletes it, so nothing piles up.
A prompt not among the stream's recent ones is encoded before its chunk (encoders moved in and out
under the memory profiles that keep them off the GPU). The session ends with the horse's `end` (the
result), its cancel (the horse went away: the supervisor cancels) or a stop; the stream is dropped then
and the weights stay loaded for the next job or session.

Every rank of the group takes each request (rank 0 broadcasts it, as it does jobs) and steps the stream
with the transformer sequence-parallel across them; rank 0 writes the frames and answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from worker.job import refuse
from worker.runtime.render import engine_facts, generation_options, window_facts

if TYPE_CHECKING:
    from worker.pipeline.pipeline import WorldPlayPipeline
    from worker.runtime.memory_profiles import Placement
    from worldplay_cli.contract.play import PlaySpec


class SessionHost(Protocol):
    """The rank serving the session (`worker.runtime.rank.RankServer`)."""

    rank: int

    def send(self, message: dict) -> None: ...
    def log(self, line: str) -> None: ...
    def next_request(self) -> dict | None: ...
    def check_cancel(self) -> None: ...


def chunk_path(work_dir: Path, chunk: int) -> Path:
    return work_dir / f"chunk-{chunk:06d}.npy"


def serve_session(
    host: SessionHost, pipeline: WorldPlayPipeline, placement: Placement, spec: PlaySpec, message: dict, opened: dict
) -> dict:
    """Serve `spec` (the horse's `message`: image_path, work_dir) until its end; returns the engine facts.
    `opened` (load_s, reused_weights) goes to the horse with the session's facts once the stream is ready."""
    from PIL import Image

    from worker.pipeline.families import open_stream
    from worker.pipeline.pipeline import GenerationError

    options = generation_options(spec, placement.tiling)
    facts = {**engine_facts(pipeline), **window_facts(options)}
    work_dir = Path(message["work_dir"])
    try:
        image = None  # text-to-video, for a family that needs no image
        if message["image_path"] is not None:
            with Image.open(message["image_path"]) as file:
                image = file.convert("RGB")
        stream = open_stream(pipeline, image, options)
        encode_s = _encode(stream, placement, spec.prompt)
    except GenerationError as error:
        refuse(error.message, error.hint, kind="bad_input")
    facts.update(steps=stream.steps, guidance_scale=stream.guidance_scale, width=stream.width, height=stream.height)
    host.log(
        f"play: {spec.variant} session on {facts['device']} ({facts['dtype']}, attention {facts['attention']}), "
        f"{stream.steps} step(s), guidance {stream.guidance_scale}, {stream.width}x{stream.height}"
    )
    host.send({"type": "session", **opened, "info": facts})
    stages = {"encode": encode_s, "context": 0.0, "denoise": 0.0, "decode": 0.0}
    frames_total = 0
    while (request := host.next_request()) is None or request["type"] != "end":
        if request is None:
            continue
        if request["type"] != "chunk":
            host.log(f"play: ignoring a {request['type']!r} request")
            continue
        started = time.perf_counter()
        if request["chunk"] != stream.num_chunks:
            refuse(f"chunk {request['chunk']} asked for, but the session is at chunk {stream.num_chunks}")
        stages["encode"] += _encode(stream, placement, request["prompt"])
        try:
            chunk = stream.step(
                np.array(request["c2w"], dtype=np.float64),
                np.array(request["intrinsics"], dtype=np.float64),
                np.array(request["actions"], dtype=np.int64),
                request["prompt"],
                on_step=lambda _step: host.check_cancel(),
            )
        except GenerationError as error:
            refuse(error.message, error.hint, kind="bad_input")
        result = chunk.result
        for stage, seconds in (
            ("context", result.context_s),
            ("denoise", result.denoise_s),
            ("decode", chunk.decode_s),
        ):
            stages[stage] += seconds
        frames_total += len(chunk.frames)
        if host.rank == 0:
            path = chunk_path(work_dir, result.index)
            np.save(path, chunk.frames)
            host.send(
                {
                    "type": "frames",
                    "chunk": result.index,
                    "path": str(path),
                    "context": result.context,
                    "generate_s": time.perf_counter() - started,
                }
            )
    host.log(f"play: session ended after {stream.num_chunks} chunk(s), {frames_total} frames")
    return {
        **facts,
        "chunks": stream.num_chunks,
        "frames": frames_total,
        "stages_s": {name: round(seconds, 4) for name, seconds in stages.items()},
    }


def _encode(stream, placement: Placement, prompt: str) -> float:
    """Encode `prompt` unless the stream knows it, with the encoders where the memory profile wants them."""
    if stream.knows(prompt):
        return 0.0
    placement.on_stage("encode")
    try:
        return stream.prepare_prompt(prompt)
    finally:
        placement.on_stage("generate")
