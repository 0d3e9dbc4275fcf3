"""The `native` engine: our WorldPlay implementation (`worker.pipeline`) behind the queue, kept loaded.

Each rq worker forks a work horse per job, so a model loaded in the horse would be gone after the job.
`NativeEngine.run` (in the horse) therefore hands the job to this worker's resident rank group
(`worker.runtime`): the ranks load the model once, serve job after job, and run a job over `spec.gpus`
ranks sequence-parallel. What every rank does with the loaded pipeline for one job is
`worker.runtime.render.render`.

The model directory is this worker's `model_dir` setting, or the one the job names if the worker allows
it (`worker.model_dirs`; paths are per host, so a worker may hold the weights elsewhere than the
submitting machine).
Progress is reported per denoising step and chunk, the video file grows chunk by chunk while the next
chunk is denoised, and the manifest gets per-stage and per-chunk timings and the memory context of every
chunk. A model directory that lacks pieces or a request the variant cannot serve fails with one line
naming the problem and the command that fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from worker.job import EngineResult, JobInputs, refuse

if TYPE_CHECKING:
    from worker.progress import Reporter
    from worldplay_cli.contract.specs import JobSpec


def worker_gpus() -> list[str]:
    """The GPU set this worker was given (`worldplay worker --gpus`); empty on a CPU worker."""
    return [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device.strip()]


def _check_gpu_count(spec: JobSpec) -> None:
    """Refuse a job wanting more GPUs than this worker was given, before a rank group fails to start."""
    visible = worker_gpus()
    if visible and spec.gpus > len(visible):
        refuse(
            f"the job asks for {spec.gpus} GPUs but this worker has {len(visible)} ({','.join(visible)})",
            f"serve its queue with `worldplay worker --gpus` giving a set of {spec.gpus} (e.g. 0-{spec.gpus - 1}), "
            f"or submit with --gpus {len(visible)}",
            kind="bad_input",
        )


class NativeEngine:
    """The work horse's side: send the job to this worker's resident group and relay what it reports."""

    name = "native"
    uses_gpu = True

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from worker.runtime import client
        from worker.runtime.memory_profiles import requested_profile
        from worker.runtime.render import model_dir_for

        _check_gpu_count(spec)
        if spec.sr:
            # six bidirectional steps over every 720p latent at once weigh about as much as the 480p rollout
            reporter.plan({"load": 0.1, "encode": 0.05, "generate": 0.45, "super-resolution": 0.4})
        else:
            reporter.plan({"load": 0.1, "encode": 0.05, "generate": 0.85})
        reporter.stage("load")
        model_dir = model_dir_for(spec, reporter.settings)
        # the ranks check the model directory: the horse stays free of torch, so a job starts at once
        job = {
            "type": "job",
            "spec": spec.model_dump(mode="json"),
            "job_dir": str(inputs.job_dir),
            "out_dir": str(out_dir),
            "model_dir": str(model_dir),
            "nproc": max(1, spec.gpus),
            "profile": requested_profile(spec, reporter.settings),
        }
        # the rq worker process is the horse's parent: the supervisor lives as long as it does
        with client.ResidentJob(os.getppid(), reporter) as resident:
            resident.send(job)
            result = resident.wait("result")
        return EngineResult(video=out_dir / "video.mp4", info=result["info"])
