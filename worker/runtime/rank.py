"""One rank of a resident group: `python -m worker.runtime.rank --control SOCKET` under the torchrun variables.

The ranks keep the pipeline loaded between jobs. Rank 0 takes jobs from the supervisor over the control
socket and broadcasts each one to the other ranks over the process group; while idle it broadcasts a
heartbeat every `TICK_S`, so idle ranks never sit in a collective long enough to time out and a dead peer
is noticed by the next tick. Every rank renders the job with `worker.runtime.render.render` (the
transformer is sequence parallel across them); rank 0 writes the video and reports stages, steps, logs
and the result.

A live session (`"kind": "play"`) is served by `worker.runtime.play.serve_session` with the same
resident pipeline: the horse's requests reach rank 0 through the supervisor and are broadcast like jobs.

A cancel from the supervisor is broadcast at the next denoising step, so all ranks stop at the same
point and the group stays usable; so does a job the engine refuses (bad request, unusable model
directory), which every rank refuses at the same point. Any other exception ends the rank: the
supervisor then tears the whole group down and starts a fresh one (a failed collective, an OOM or an
illegal address leave nothing worth keeping, performance-reliability D3).
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from worker.job import JobFailed, JobInputs, refuse
from worker.parallel.launch import exit_rank, init_from_env
from worker.progress import JobCanceled
from worker.runtime.memory_profiles import (
    POLICIES,
    PeakMemory,
    Placement,
    choose_profile,
    is_out_of_memory,
    oom_hint,
)
from worker.runtime.protocol import Connection, ConnectionClosed
from worker.runtime.render import refusing_unavailable_backends, refusing_unusable_model_dirs, render
from worldplay_cli.contract import variants
from worldplay_cli.contract.specs import JobSpec

TICK_S = 1.0


class _Stopping(Exception):
    """A stop arrived while a session was being served: the rank ends."""


@dataclass
class Loaded:
    """The resident pipeline and what it was loaded for."""

    key: tuple  # model dir, variant, memory profile, the transformer's options (weights, compile, attention)
    pipeline: object
    placement: Placement
    choice: object
    load_s: float
    loaded_at: float = field(default_factory=time.time)
    jobs: int = 0


class RankServer:
    def __init__(self, control: Connection | None):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = (
            torch.device(f"cuda:{torch.cuda.current_device()}") if torch.cuda.is_available() else torch.device("cpu")
        )
        self.control = control
        self.loaded: Loaded | None = None
        self.loads = 0
        self.jobs = 0
        self._inbox: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        if control is not None:
            threading.Thread(target=self._read_control, daemon=True).start()

    # -- messages -------------------------------------------------------------------------------------

    def _read_control(self) -> None:
        """Rank 0: jobs and stops go to the inbox; a cancel is a flag the denoising loop polls."""
        try:
            while True:
                message = self.control.receive(None)
                if message["type"] == "cancel":
                    self._cancel.set()
                else:
                    self._inbox.put(message)
        except ConnectionClosed:
            self._inbox.put({"type": "stop"})

    def send(self, message: dict) -> None:
        if self.control is not None:
            self.control.send(message)

    def log(self, line: str) -> None:
        print(line, flush=True)
        self.send({"type": "log", "line": line})

    def _next_message(self) -> dict | None:
        message = None
        if self.rank == 0:
            try:
                message = self._inbox.get(timeout=TICK_S)
            except queue.Empty:
                pass
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def next_request(self) -> dict | None:
        """A live session's next request (None on an idle tick); raises `JobCanceled` on a cancel."""
        message = self._next_message()
        self.check_cancel()
        if message is not None and message["type"] == "stop":
            raise _Stopping
        return message

    def check_cancel(self) -> None:
        flag = torch.tensor([1 if self.rank == 0 and self._cancel.is_set() else 0], device=self._collective_device())
        if self.world > 1:
            dist.broadcast(flag, src=0)
        if flag.item():
            raise JobCanceled("canceled by the user")

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # -- serving --------------------------------------------------------------------------------------

    def serve(self) -> None:
        self.send({"type": "ready", "world_size": self.world, "device": str(self.device)})
        while True:
            message = self._next_message()
            if message is None:
                continue
            if message["type"] == "stop":
                return
            self._cancel.clear()
            try:
                run = self.run_play if message.get("kind") == "play" else self.run_job
                self.send({"type": "result", "info": run(message)})
            except _Stopping:
                return
            except JobCanceled:
                self.send({"type": "canceled"})
            except JobFailed as failed:
                # the job's own fault (a request the variant cannot serve, a model directory that cannot
                # serve it): every rank refused it at the same point, so the group stays usable
                self.send({"type": "error", **failed.failure.model_dump(), "fatal": False})
            except BaseException as error:
                self._report(error, message)
                raise

    def _report(self, error: BaseException, message: dict) -> None:
        traceback.print_exc()
        text = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
        if is_out_of_memory(error):
            profile = self.loaded.key[2] if self.loaded else message["profile"]
            hint = oom_hint(
                profile if profile in POLICIES else "resident", self.world, max(1, torch.cuda.device_count())
            )
            self.send(
                {
                    "type": "error",
                    "kind": "oom",
                    "message": f"out of memory: {detail}",
                    "hint": hint,
                    "profile": profile,
                }
            )
        else:
            self.send(
                {
                    "type": "error",
                    "kind": "engine_error",
                    "message": f"rank {self.rank}: {detail}",
                    "hint": "see the job log",
                }
            )

    def ensure_loaded(
        self, model_dir: str, variant: str, requested: str, sr: bool = False, options: dict | None = None
    ) -> tuple[Loaded, bool]:
        """The pipeline for (model dir, variant, profile, the transformer's `options`: `transformer_options`):
        the resident one, or a fresh load in its place."""
        from worker.parallel.ulysses import UlyssesAttention
        from worker.pipeline.families import load_pipeline, transformer_scale
        from worker.pipeline.model_dir import resolve_model_dir

        with refusing_unusable_model_dirs():
            paths = resolve_model_dir(model_dir, variant)
            scale = transformer_scale(paths.transformer_dir, variant)
        gpu_memory = torch.cuda.get_device_properties(self.device).total_memory if self.device.type == "cuda" else None
        # a job with the SR stage may need a lower rung than the same job without (then it loads anew)
        choice = choose_profile(requested, variant, self.world, gpu_memory, scale, sr)
        options = options or {}
        if {"weights", "compile"} & options.keys() and variants.get(variant).family_name != "hunyuan":
            refuse(f"--weights fp8 and --compile run the HunyuanVideo family's transformer, not {variant}'s",
                   "generate without them", kind="bad_input")  # fmt: skip
        key = (str(model_dir), variant, choice.profile, tuple(sorted(options.items())))
        if self.loaded is not None and self.loaded.key == key:
            return self.loaded, True
        if self.loaded is not None:
            self.log(f"resident: dropping {self.loaded.key[1]} ({self.loaded.jobs} job(s) served) to load {variant}")
        self.loaded = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        started = time.perf_counter()
        policy = POLICIES[choice.profile]
        # encoders that visit the GPU only to encode are loaded into host memory, so that loading never
        # peaks at the resident footprint
        encoders_device = self.device if policy.encoders_resident else torch.device("cpu")
        with refusing_unusable_model_dirs(), refusing_unavailable_backends():
            pipeline = load_pipeline(model_dir, variant, device=self.device, encoders_device=encoders_device, **options)
        if self.world > 1:
            transformer = pipeline.transformer
            transformer.set_attention_processor(UlyssesAttention(backend=transformer.attention_processor.backend))
        placement = Placement(pipeline, policy, self.device)
        self.loads += 1
        self.loaded = Loaded(key, pipeline, placement, choice, time.perf_counter() - started)
        self.log(
            f"resident: load #{self.loads} of this group: {variant} from {model_dir} on {self.world} rank(s) "
            f"in {self.loaded.load_s:.1f} s, memory profile {choice.profile} ({choice.reason})"
        )
        self.send({"type": "loaded", "variant": variant, "load_s": self.loaded.load_s})
        return self.loaded, False

    def run_job(self, message: dict) -> dict:
        spec = JobSpec.model_validate(message["spec"])
        peak = PeakMemory(self.device.type)
        peak.start("load")
        loaded, reused = self.ensure_loaded(
            message["model_dir"], spec.variant, message["profile"], spec.sr, transformer_options(spec)
        )
        peak.stop()
        self._count_job(loaded, reused, spec.variant)
        video = Path(message["out_dir"]) / "video.mp4" if self.rank == 0 else None
        inputs = JobInputs(Path(message["job_dir"]), spec)
        facts = render(
            loaded.pipeline, spec, inputs, video, JobReporter(self, loaded.placement, peak), loaded.placement.tiling
        )
        peak.stop()
        return {
            **facts,
            "sequence_parallel": self.world,
            "resident": self._resident_facts(loaded, reused),
            "memory": {"requested": message["profile"], "profile": loaded.choice.profile,
                       "estimated_peak_bytes": loaded.choice.estimated_peak_bytes, "peak_bytes": peak.stages,
                       "retried_from": message.get("retried_from")},
        }  # fmt: skip

    def run_play(self, message: dict) -> dict:
        from worker.runtime.play import serve_session
        from worldplay_cli.contract.play import PlaySpec

        spec = PlaySpec.model_validate(message["spec"])
        loaded, reused = self.ensure_loaded(message["model_dir"], spec.variant, message["profile"])
        self._count_job(loaded, reused, spec.variant)
        opened = {"load_s": round(loaded.load_s, 3) if not reused else 0.0, "reused_weights": reused}
        facts = serve_session(self, loaded.pipeline, loaded.placement, spec, message, opened)
        return {**facts, "sequence_parallel": self.world, "resident": self._resident_facts(loaded, reused)}

    def _count_job(self, loaded: Loaded, reused: bool, variant: str) -> None:
        self.jobs += 1
        loaded.jobs += 1
        if reused:
            age = time.time() - loaded.loaded_at
            self.log(
                f"resident: reusing {variant} weights loaded {age:.0f} s ago (load #{self.loads}, job {self.jobs} of this group)"
            )

    def _resident_facts(self, loaded: Loaded, reused: bool) -> dict:
        return {
            "loads_in_group": self.loads,
            "jobs_in_group": self.jobs,
            "reused_weights": reused,
            "load_s": round(loaded.load_s, 3),
        }


def transformer_options(spec: JobSpec) -> dict:
    """The job's choices of how the transformer runs, as `from_model_dir` options: only those it changes from
    the defaults (a family's pipeline that has no such option then refuses the job, see `ensure_loaded`)."""
    options = {"attention_backend": spec.attention_backend, "weights": spec.weights, "compile": spec.compile}
    defaults = {"attention_backend": "auto", "weights": "default", "compile": False}
    return {name: value for name, value in options.items() if value != defaults[name]}


class JobReporter:
    """`render`'s reporter inside a rank: stages move the model's parts (memory profile) and start a peak
    measurement; every step is a cancel check all ranks take part in; rank 0 relays it all."""

    def __init__(self, server: RankServer, placement: Placement, peak: PeakMemory):
        self.server = server
        self.placement = placement
        self.peak = peak

    def stage(self, name: str) -> None:
        self.placement.on_stage(name)
        self.peak.start(name)
        self.server.send({"type": "stage", "name": name})

    def update(
        self, step: int, total: int | None = None, chunk: int | None = None, num_chunks: int | None = None
    ) -> None:
        self.server.check_cancel()
        self.server.send({"type": "progress", "done": step, "total": total, "chunk": chunk, "num_chunks": num_chunks})

    def log(self, message: str) -> None:
        self.server.log(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.runtime.rank", description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="the supervisor's control socket (rank 0 connects)")
    parser.add_argument("--collective-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    info = init_from_env(timeout_s=args.collective_timeout)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks share the host's cores; one thread per core each would oversubscribe them
        torch.set_num_threads(max(1, torch.get_num_threads() // info.world_size))
    control = Connection.connect(args.control) if info.rank == 0 else None
    RankServer(control).serve()
    return 0


if __name__ == "__main__":
    # the supervisor ends the group, and a peer may be gone already (a dead rank): nobody to meet
    exit_rank(main(), meet_peers=False)
