"""The resident native engine: the native pipeline in this worker's persistent rank group.

The first job starts the group (and loads the model); later jobs with the same model directory, variant
and memory profile start denoising at once; another variant swaps the weights. `spec.gpus` ranks run
the job sequence-parallel. What the job sees is the same as with the per-job `native` engine (progress,
logs, video, manifest facts), plus a `resident` block (loads, reuse) and a `memory` block (profile,
peak bytes per stage) in the manifest's engine info.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from worker.engines import EngineResult, JobInputs

if TYPE_CHECKING:
    from worldplay_cli.schema import JobSpec
    from worker.progress import Reporter


class ResidentEngine:
    name = "resident"
    uses_gpu = True

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from worldplay_cli.schema import Failure
        from worker.engines.native import model_dir_for
        from worker.runtime.memory_profiles import requested_profile
        from worker.pipeline.model_dir import ModelDirError, resolve_model_dir
        from worker.progress import JobCanceled
        from worker.runner import JobFailed
        from worker.runtime import client
        from worker.runtime.protocol import ConnectionClosed

        reporter.plan({"load": 0.1, "encode": 0.05, "generate": 0.85})
        reporter.stage("load")
        model_dir = model_dir_for(spec)
        try:
            resolve_model_dir(model_dir, spec.variant)
        except ModelDirError as error:
            raise JobFailed(Failure(kind="refused", message=error.message, hint=error.hint or None)) from None
        job = {
            "type": "job",
            "spec": spec.model_dump(mode="json"),
            "job_dir": str(inputs.job_dir),
            "out_dir": str(out_dir),
            "model_dir": str(model_dir),
            "nproc": max(1, spec.gpus),
            "profile": requested_profile(spec),
        }
        # the rq worker process is the horse's parent: the supervisor lives as long as it does
        connection = client.connect(os.getppid())
        try:
            connection.send(job)
            while True:
                message = connection.receive(0.5)
                if message is None:
                    reporter.check_cancel()
                    continue
                kind = message["type"]
                if kind == "stage":
                    reporter.stage(message["name"])
                elif kind == "progress":
                    reporter.update(message["done"], message["total"], chunk=message["chunk"], num_chunks=message["num_chunks"])
                elif kind == "log":
                    reporter.log(message["line"])
                elif kind == "result":
                    return EngineResult(video=out_dir / "video.mp4", info=message["info"])
                elif kind == "canceled":
                    raise JobCanceled("canceled by the user")
                else:
                    raise JobFailed(Failure(kind=message["kind"], message=message["message"], hint=message.get("hint")))
        except ConnectionClosed:
            raise JobFailed(
                Failure(kind="engine_error", message="the resident supervisor went away during the job",
                        hint=f"see {client.log_dir(os.getppid())}")
            ) from None  # fmt: skip
        finally:
            # closing tells the supervisor to cancel a job still running (cancel, timeout)
            connection.close()
