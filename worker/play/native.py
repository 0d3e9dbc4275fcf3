"""The native engine's chunk source: a live session on this worker's resident rank group.

The session loop runs in the work horse, which stays free of torch; `NativeSource` hands the session to
the rank group that keeps the model loaded (`worker.runtime`, the way `worker.engines.native` hands it a
generation job), then sends each chunk's cameras, actions and prompt and reads back its frames. The
ranks run one open-ended AR stream (`worker.pipeline.stream.ARStream`, served by
`worker.runtime.play`): memory over every chunk so far, text states encoded once per prompt, each chunk
decoded on its own through the streaming VAE. Weights stay loaded between sessions and generation jobs
(`SourceInfo.reused_weights`).

A session runs over the worker's whole GPU set (`worldplay worker --gpus 0-7`: 8 ranks, sequence
parallel, as a generation with `--gpus 8`), on one rank on a CPU worker; a `PlaySpec` has no GPU count
of its own. Closing the source ends the session and frees the group for the next job; if the horse dies instead, the supervisor sees its socket close and
cancels the session, and the ranks stay usable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.job import JobFailed
from worker.play.source import ChunkFrames, SourceInfo
from worker.progress import JobCanceled

if TYPE_CHECKING:
    from worker.progress import Reporter
    from worker.runtime.client import ResidentJob
    from worldplay_cli.contract.play import PlaySpec

# How long the ranks may take to confirm the end of a session (they answer at once: they wait for requests).
CLOSE_TIMEOUT_S = 30.0


class NativeSource:
    """`ChunkSource` of the native engine. `owner` is the rq worker process whose resident group serves
    the session (default: the horse's parent, as for generation jobs); `ranks` the size of that group
    (default: the worker's GPU count, 1 without GPUs)."""

    name = "native"

    def __init__(self, owner: int | None = None, ranks: int | None = None):
        from worker.engines.native import worker_gpus

        self.owner = owner if owner is not None else os.getppid()
        self.ranks = ranks or max(1, len(worker_gpus()))
        self._resident: ResidentJob | None = None
        self._awaiting = False  # a request was sent and its answer never read (interrupted or failed)

    def open(self, spec: PlaySpec, image_path: Path | None, work_dir: Path, reporter: Reporter) -> SourceInfo:
        from worker.runtime.client import ResidentJob
        from worker.runtime.memory_profiles import requested_profile
        from worker.runtime.render import model_dir_for

        model_dir = model_dir_for(spec, reporter.settings)
        self._resident = ResidentJob(self.owner, reporter)
        opened = self._ask(
            {
                "type": "job",
                "kind": "play",
                "spec": spec.model_dump(mode="json"),
                "image_path": str(image_path) if image_path is not None else None,  # None: text-to-video
                "work_dir": str(work_dir),
                "model_dir": str(model_dir),
                "nproc": self.ranks,
                "profile": requested_profile(spec, reporter.settings),
            },
            "session",
        )
        return SourceInfo(load_s=opened["load_s"], reused_weights=opened["reused_weights"], info=opened["info"])

    def generate(
        self, chunk: int, c2w: np.ndarray, intrinsics: np.ndarray, actions: np.ndarray, prompt: str
    ) -> ChunkFrames:
        if self._resident is None:
            raise RuntimeError("the native source is not open")
        answer = self._ask(
            {
                "type": "chunk",
                "chunk": chunk,
                "c2w": np.asarray(c2w, dtype=np.float64).tolist(),
                "intrinsics": np.asarray(intrinsics, dtype=np.float64).tolist(),
                "actions": np.asarray(actions, dtype=np.int64).tolist(),
                "prompt": prompt,
            },
            "frames",
        )
        path = Path(answer["path"])
        frames = np.load(path)
        path.unlink()
        return ChunkFrames(frames=frames, context=answer["context"], generate_s=answer["generate_s"])

    def _ask(self, request: dict, answer: str) -> dict:
        self._awaiting = True
        self._resident.send(request)
        reply = self._resident.wait(answer)
        self._awaiting = False
        return reply

    def close(self) -> None:
        """End the session and wait (bounded) for the ranks to confirm. After an interrupted request, a
        cancel or a failure, closing the connection ends it instead: the supervisor cancels the session
        at the ranks' next denoising step or request (or has ended it already)."""
        resident, self._resident = self._resident, None
        if resident is None:
            return
        try:
            if not self._awaiting:
                resident.send({"type": "end"})
                resident.wait("result", timeout_s=CLOSE_TIMEOUT_S)
        except (JobFailed, JobCanceled, TimeoutError) as error:
            resident.reporter.log(f"play: the native session ended without the ranks' confirmation: {error}")
        finally:
            resident.close()
