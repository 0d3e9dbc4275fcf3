"""The `official` engine: run the user's HY-WorldPlay checkout behind our queue, progress and outputs.

`torchrun --nproc_per_node <gpus> hyvideo/generate.py ...` with arguments mapped from the job spec, around
the official CLI's traps (reference §1, §13.14):
- `--few_step true` written out for the distilled model (a bare `--few_step` means False);
- `--sr` spelled out (it defaults to true and its weights are not part of the official download): true
  only for a job with `sr`, whose SR weights are checked first; `--save_pre_sr_video` spelled out too, and
  the official `gen_sr.mp4` / `gen.mp4` become our `video.mp4` / `video_480p.mp4`;
- an output directory per job attempt (`--output_path` defaults to None and crashes at save time);
- the trajectory as a JSON file (pose strings cannot express arbitrary paths);
- `--video_length` = the spec's frame count, `--height/--width` explicit, `--rewrite false` (prompt
  rewriting happened before the job was enqueued, if at all).

A WAN variant runs the checkout's `wan/generate.py` instead (`contract.variants.Family.official_script`;
`WAN_ARGUMENTS` maps the spec): `--input` the prompt, `--image_path` the image (none: text-to-video),
`--pose` the trajectory JSON, `--num_chunk` its chunks, `--ar_model_path wan_transformer`, `--ckpt_path
wan_distilled_model/model.pt`, `--model_id` the Wan2.2 base, `--out` the output directory, with
`PYTHONPATH` holding the checkout and its `wan/`. That script always loads both WAN checkpoints and runs the
few-step recipe at 1280x704, so only `wan-distilled` at that size is accepted; its one mp4 (named after pose
and prompt) becomes `video.mp4`. It loads the base pipeline's index, which lists a `transformer/` our
download leaves out (every WAN checkpoint is a full state dict): the script is given a view of the base in
the attempt's directory whose index names no transformer.

torchrun writes each rank's output to its own files; rank 0's stderr carries the tqdm bar of every chunk's
denoising loop, which becomes step/chunk progress in the job meta. Rank 0's other output goes to the job
log. The checkout is the worker's `official_repo` setting (`WORLDPLAY_OFFICIAL_REPO`), or the job's
`official_repo` (`--official-repo`) when the worker allows it (`worker.official_repos`); see the trust model
in docs/queue-and-workers.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.job import EngineResult, JobFailed, JobInputs, allowed_path, refuse
from worldplay_cli.contract import layout, sr, variants

if TYPE_CHECKING:
    from worker.progress import Reporter
    from worldplay_cli.contract.settings import Settings
    from worldplay_cli.contract.specs import JobSpec

PYTHON_ENV = "HY_WORLDPLAY_PYTHON"  # the interpreter of the checkout's environment (default: ours)
SCRIPT = variants.FAMILIES["hunyuan"].official_script
# Official flags per memory profile; `auto` keeps the official default (offloading on).
PROFILE_FLAGS = {
    "auto": ["--offloading", "true"],
    "resident": ["--offloading", "false"],
    "offload": ["--offloading", "true"],
    "group-offload": ["--offloading", "true", "--group_offloading", "true"],
    "low-vram": ["--offloading", "true", "--group_offloading", "true", "--use_vae_parallel", "true"],
}
_POLL_S = 0.2
# tqdm: "...| 3/4 [00:01<00:00, 2.10it/s]"
_TQDM = re.compile(rb"(\d+)/(\d+) \[")
_CONSOLE_SPLIT = re.compile(r"\r|\[default\d+\]:")  # tqdm redraws; torchrun --tee marks rank 0's lines
_ERROR_LINE = re.compile(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b.*)$")


def official_arguments(
    spec: JobSpec,
    model_dir: Path,
    action_checkpoint: Path,
    image: Path,
    pose_json: Path,
    output_dir: Path,
    profile: str = "auto",
) -> list[str]:
    """The `hyvideo/generate.py` arguments for `spec` (every flag explicit, booleans spelled out)."""
    record = variants.get(spec.variant)
    arguments = [
        "--prompt", spec.prompt,
        "--negative_prompt", spec.negative_prompt,
        "--image_path", str(image),
        "--pose", str(pose_json),
        "--resolution", spec.resolution,
        "--model_path", str(model_dir),
        "--action_ckpt", str(action_checkpoint),
        "--model_type", record.model_type,
        "--few_step", "true" if record.few_step else "false",
        "--num_inference_steps", str(spec.steps),
        "--video_length", str(spec.frames),
        "--height", str(spec.height),
        "--width", str(spec.width),
        "--seed", str(spec.seed),
        "--sr", "true" if spec.sr else "false",
        "--save_pre_sr_video", "true" if spec.keep_pre_sr else "false",
        "--rewrite", "false",
        "--dtype", "bf16",
        "--output_path", str(output_dir),
    ]  # fmt: skip
    return arguments + PROFILE_FLAGS[profile]


def wan_arguments(
    spec: JobSpec, model_id: Path, paths, image: Path | None, pose_json: Path, output_dir: Path
) -> list[str]:
    """The `wan/generate.py` arguments for `spec` (`paths`: the variant's `ModelPaths`)."""
    arguments = [
        "--input", spec.prompt,
        "--negative_prompt", spec.negative_prompt,
        "--pose", str(pose_json),
        "--num_chunk", str(spec.trajectory.num_latents // variants.get(spec.variant).chunk_latents),
        "--num_frames", str(spec.frames),
        "--num_inference_steps", str(spec.steps),
        "--model_id", str(model_id),
        "--ar_model_path", str(paths.transformer_dir),
        "--ckpt_path", str(paths.action_checkpoint),
        "--out", str(output_dir),
    ]  # fmt: skip
    return arguments + (["--image_path", str(image)] if image is not None else [])


def wan_refusal(spec: JobSpec, paths) -> tuple[str, str] | None:
    """(problem, hint) when `wan/generate.py` cannot run `spec`, else None."""
    record = variants.get(spec.variant)
    size = record.family.default_size
    if not record.few_step:
        return (
            f"the official WAN script runs the distilled model only, not {spec.variant}",
            "use --variant wan-distilled, or --engine native",
        )
    if (spec.width, spec.height) != size:
        return (
            f"the official WAN script generates {size[0]}x{size[1]} only, not {spec.width}x{spec.height}",
            f"use --width {size[0]} --height {size[1]}, or --engine native",
        )
    if "@" in spec.prompt:
        return ("the official WAN script reads 'prompt@image': a prompt cannot contain '@'", "rephrase the prompt")
    weights = paths.transformer_dir / layout.WEIGHTS_NAME
    if not weights.is_file():
        return (
            f"the official WAN script loads {weights} before the distilled weights, and it is missing",
            f"run `worldplay download wan-ar --model-dir {paths.root}` on the worker host",
        )
    return None


def wan_model_id(paths, run_dir: Path) -> Path:
    """The Wan2.2 base as the script's `--model_id`: the base folder when it has its transformer, else a view
    of it in `run_dir` (links to its folders, an index naming no transformer)."""
    base = layout.WanLayout(paths.root).base_dir
    if (base / "transformer").is_dir():
        return base
    view = run_dir / "model_id"
    view.mkdir()
    index = json.loads((base / "model_index.json").read_text())
    index.update({name: [None, None] for name in ("transformer", "transformer_2") if name in index})
    (view / "model_index.json").write_text(json.dumps(index, indent=2))
    for entry in base.iterdir():
        if entry.is_dir():
            (view / entry.name).symlink_to(entry.resolve())
    return view


def torchrun_command(
    python: str, nproc: int, master_port: int, log_dir: Path, arguments: list[str], script: str = SCRIPT
) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`) with per-rank log files, rank 0 echoed to the console."""
    return [
        python, "-m", "torch.distributed.run",
        "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1",
        "--master_port", str(master_port),
        "--max-restarts", "0",
        "--log-dir", str(log_dir),
        "--redirects", "3",
        "--tee", "3",
        "--local-ranks-filter", "0",
        script, *arguments,
    ]  # fmt: skip


class ProgressParser:
    """Denoising progress from rank 0's raw stderr: one tqdm bar of `steps` per chunk.

    A bar that goes back (a new bar starting at 0/steps) is the next chunk; repeated prints of the same
    count (tqdm redraws on close) change nothing; bars of another length are not denoising loops.
    """

    def __init__(self, steps: int, num_chunks: int):
        self.steps = steps
        self.num_chunks = num_chunks
        self.chunk = -1
        self.step = 0

    def feed(self, data: bytes) -> bool:
        """Consume output; True when the position moved."""
        moved = False
        for match in _TQDM.finditer(data):
            step, total = int(match.group(1)), int(match.group(2))
            if total != self.steps:
                continue
            if self.chunk < 0 or step < self.step:
                self.chunk = min(self.chunk + 1, self.num_chunks - 1)
                moved = True
            moved = moved or step != self.step
            self.step = step
        return moved

    @property
    def done(self) -> int:
        return max(self.chunk, 0) * self.steps + self.step


def console_lines(line: str) -> list[str]:
    """The log-worthy text of one console line: rank prefixes dropped, progress-bar redraws left out (a
    partial redraw may share a line with the next output of rank 0)."""
    pieces = (piece.rstrip() for piece in _CONSOLE_SPLIT.split(line))
    return [piece for piece in pieces if piece.strip() and not _TQDM.search(piece.encode())]


def official_repo_for(spec: JobSpec, settings: Settings) -> Path | None:
    """The checkout to execute: the worker's, never one a job brings (whoever can enqueue would run code
    on every worker); a job may pick one of `official_repo` + `worker.official_repos`."""
    return allowed_path(
        spec.official_repo,
        settings.official_repo,
        settings.worker.official_repos,
        "official checkout",
        "worker.official_repos",
    )


class _Tail:
    """New bytes of a file that another process is writing (it may not exist yet)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.offset = 0

    def read(self) -> bytes:
        if self.path is None or not self.path.exists():
            return b""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        return data


class OfficialEngine:
    name = "official"
    uses_gpu = True

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from worker.parallel.launch import free_port
        from worker.pipeline.model_dir import download_command, resolve_model_dir
        from worker.runtime.memory_profiles import requested_profile
        from worker.runtime.render import model_dir_for, refusing_unusable_model_dirs
        from worldplay_cli.contract.specs import PRE_SR_VIDEO_FILE, VIDEO_FILE, Failure

        settings = reporter.settings
        family = variants.get(spec.variant).family
        script = family.official_script
        if spec.sr:
            reporter.plan({"load": 0.15, "generate": 0.45, "super-resolution": 0.35, "collect": 0.05})
        else:
            reporter.plan({"load": 0.15, "generate": 0.8, "collect": 0.05})
        reporter.stage("load")
        repo = official_repo_for(spec, settings)
        if repo is None or not (repo / script).is_file():
            where = f"{repo} has no {script}" if repo else "no HY-WorldPlay checkout is configured"
            refuse(
                f"official engine: {where}",
                "clone Tencent-Hunyuan/HY-WorldPlay on the worker host and set official_repo there",
            )
        model_dir = model_dir_for(spec, settings)
        with refusing_unusable_model_dirs():
            paths = resolve_model_dir(model_dir, spec.variant)
        if spec.sr and not paths.has_sr:
            refuse(
                f"the 720p super-resolution weights are not in {model_dir}",
                f"run `{download_command(sr.DOWNLOAD_PIECE, model_dir)}` on the worker host, or generate without --sr",
                kind="bad_input",
            )

        # 1. a private directory per attempt: the pose as JSON, the official output dir, torchrun's logs
        run_dir = out_dir / "official"
        run_dir.mkdir()
        pose_json = run_dir / "pose.json"
        pose_json.write_bytes(inputs.trajectory_path.read_bytes())
        output_dir, log_dir = run_dir / "output", run_dir / "logs"
        profile = requested_profile(spec, settings)
        import_paths = [str(repo)]
        if family.name == "wan":
            refusal = wan_refusal(spec, paths)
            if refusal is not None:
                refuse(*refusal, kind="bad_input")
            image = inputs.image_path if spec.image is not None else None
            arguments = wan_arguments(spec, wan_model_id(paths, run_dir), paths, image, pose_json, output_dir)
            import_paths.append(str(repo / "wan"))  # the official WAN instructions put both on PYTHONPATH
        else:
            arguments = official_arguments(
                spec, model_dir, paths.action_checkpoint, inputs.image_path, pose_json, output_dir, profile
            )
        python = os.environ.get(PYTHON_ENV) or sys.executable
        nproc = max(1, spec.gpus)
        command = torchrun_command(python, nproc, free_port(), log_dir, arguments, script)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [*import_paths, os.environ.get("PYTHONPATH")]))}
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        # whole lines, promptly: torchrun echoes rank 0's stdout and stderr into one console file
        env["PYTHONUNBUFFERED"] = "1"
        reporter.log(
            f"official: {python} -m torch.distributed.run --nproc_per_node {nproc} {script} in {repo} (profile {profile})"
        )

        # 2. run it, turning rank 0's output into progress and log lines
        console_path = run_dir / "console.log"
        steps, num_chunks = spec.steps, spec.trajectory.num_latents // variants.get(spec.variant).chunk_latents
        parser = ProgressParser(steps, num_chunks)
        # the SR loop's bar comes after every chunk's: one "chunk" of sr.STEPS
        sr_parser = ProgressParser(sr.STEPS, 1) if spec.sr else None
        console, rank0_stderr = _Tail(console_path), _Tail()
        pending = b""
        tail_lines: list[str] = []
        stage = "load"
        with open(console_path, "wb") as console_file:
            process = subprocess.Popen(
                command, cwd=repo, env=env, stdout=console_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            while True:
                exited = process.poll() is not None
                if rank0_stderr.path is None:
                    rank0_stderr.path = next(iter(sorted(log_dir.glob("**/0/stderr.log"))), None)
                output = rank0_stderr.read()
                if sr_parser is not None and parser.done >= steps * num_chunks:
                    if sr_parser.feed(output):
                        if stage != "super-resolution":
                            stage = "super-resolution"
                            reporter.stage(stage)
                        reporter.update(sr_parser.done, sr.STEPS, chunk=1, num_chunks=1)
                    else:
                        reporter.check_cancel()
                elif parser.feed(output):
                    if stage != "generate":
                        stage = "generate"
                        reporter.stage(stage)
                    reporter.update(parser.done, steps * num_chunks, chunk=parser.chunk + 1, num_chunks=num_chunks)
                else:
                    reporter.check_cancel()
                pending += console.read()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    for text in console_lines(line.decode(errors="replace")):
                        reporter.log(f"official: {text}")
                        tail_lines = (tail_lines + [text])[-50:]
                if exited:
                    break
                time.sleep(_POLL_S)
        finally:
            _stop(process, settings.worker.kill_grace_s)

        # 3. the verdict and the video
        if process.returncode != 0:
            raise JobFailed(_failure(process.returncode, tail_lines, log_dir, spec, profile))
        reporter.stage("collect")
        # the official names -> ours: with --sr, gen_sr.mp4 is the video and gen.mp4 the kept 480p one; the
        # WAN script names its one video after the pose and the prompt
        outputs = {"gen_sr.mp4": VIDEO_FILE, "gen.mp4": PRE_SR_VIDEO_FILE} if spec.sr else {"gen.mp4": VIDEO_FILE}
        if family.name == "wan":
            outputs = {produced.name: VIDEO_FILE for produced in sorted(output_dir.glob("*.mp4"))[:1]} or {
                "*.mp4": VIDEO_FILE
            }
        for official_name, ours in outputs.items():
            produced = output_dir / official_name
            if produced.is_file():
                os.replace(produced, out_dir / ours)
            elif ours in spec.videos():
                raise JobFailed(
                    Failure(kind="engine_error", message=f"the official script exited 0 but wrote no {official_name}")
                )
        video = out_dir / VIDEO_FILE
        info = {
            "variant": spec.variant,
            "official_repo": str(repo),
            "model_dir": str(model_dir),
            "checkpoint": str(paths.action_checkpoint),
            "nproc": nproc,
            "memory_profile": profile,
            "arguments": arguments,
        }
        return EngineResult(video=video, info=info)


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM torchrun (it forwards to its ranks), SIGKILL its group after the grace; the runner then
    sweeps every marked process, ranks in their own sessions included."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _failure(returncode: int, tail_lines: list[str], log_dir: Path, spec: JobSpec, profile: str):
    from worker.runtime.memory_profiles import oom_hint
    from worldplay_cli.contract.specs import Failure

    lines = list(tail_lines)
    for path in sorted(log_dir.glob("**/0/stderr.log")):
        lines += path.read_text(errors="replace").replace("\r", "\n").splitlines()[-50:]
    errors = [match.group(1) for line in lines if (match := _ERROR_LINE.match(line))]
    last = errors[-1] if errors else f"exit code {returncode}"
    if any("out of memory" in line.lower() for line in errors):
        hint = oom_hint("offload" if profile == "auto" else profile, max(1, spec.gpus), max(1, spec.gpus))
        return Failure(kind="oom", message=f"official script ran out of memory: {last}", hint=hint)
    return Failure(kind="engine_error", message=f"official script failed: {last}", hint="see the job log")
