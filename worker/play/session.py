"""The body of task `worker.tasks.play`: one live session, from its player's first keys to its outputs.

Around the session is what every job has (`worker.job.JobRun`: the attempt, the claim, the reporter, the
manifest, the failure bookkeeping, the end of every process it started). The session itself:

1. Opens its chunk source (`SOURCES`: the preview reprojection or the native AR rollout) and publishes
   `Ready`. From then on a thread refreshes the worker liveness key every `WORKER_ALIVE_EVERY_S`, so however
   long a chunk takes the player can tell a busy worker from a dead one.
2. Reads the player's messages in short slices. `Keys` for the next chunk (or up to `ahead_chunks` past
   it) wait until their chunk starts; a `SetPrompt` applies from the next chunk started, a `Marker` is
   attached to it. A message that does not validate, keys of the wrong length or for a chunk already made
   or too far ahead are logged and skipped: bad input never ends a session.
3. Makes a chunk when its keys are there: poses extend the path latent by latent from the held keys
   (`trajectories.poses.keys_motion`, latent 0 at the identity), action ids are `compute_actions` over
   them, exactly the official derivation; the source turns them into frames; `Chunk` carries them to the
   player as JPEGs. Then the chunk is kept: its frames as `segments/chunk-NNNNN.mp4`, then
   `trajectory.json` (official JSON of every latent so far) and `timeline.json` (`contract.play.Timeline`,
   the record of complete chunks) rewritten atomically, and the job's meta (`JobMeta.play`) updated.
4. Ends on `End` (quit), `idle_timeout_s` without any message from the player and no chunk being made
   (idle), `max_chunks`, a cancel (`worldplay jobs cancel`: the reporter's flag, or the worker's SIGTERM
   during the kill grace), a timeout or a failure. Every end joins the segments of the timeline's chunks
   into `video.mp4` (stream copy: exactly the frames generated), writes the manifest (finished, stopped or
   failed) and publishes `Ended` or `Failed`, in that order, so a player that reads `Ended` finds the outputs.

A session killed outright (SIGKILL, a host gone) cannot join its segments: its job directory still holds
every complete chunk (`segments/`, `timeline.json` lists which, `trajectory.json` their poses), and
`python -m worker.play JOB_DIR` (`join_session_video`) makes `video.mp4` of them; the reaper marks the job
failed. A session is never run twice: its player left with the first run (should its job come back to a
queue, a second attempt is refused at once).
"""

from __future__ import annotations

import importlib
import io
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker import proctree
from worker.job import JobFailed, JobRun, classify, refuse
from worker.progress import JobCanceled
from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.play import (
    SEGMENTS_DIR,
    WORKER_ALIVE_EVERY_S,
    BadMessage,
    Chunk,
    End,
    Ended,
    Failed,
    Keys,
    Marker,
    PlayChannel,
    PlayManifest,
    PlayOutcome,
    PlaySpec,
    PromptChange,
    Ready,
    SetPrompt,
    Timeline,
    TimelineChunk,
    frames_of_chunk,
    segment_name,
)
from worldplay_cli.contract.queue import write_json_atomic
from worldplay_cli.contract.settings import create_job_dir, write_job_file
from worldplay_cli.contract.specs import Failure, Progress, VideoInfo, cancel_key

if TYPE_CHECKING:
    from rq.job import Job

    from worker.play.source import ChunkSource

# The chunk source of each engine that can play.
SOURCES = {"preview": "worker.play.preview:PreviewSource", "native": "worker.play.native:NativeSource"}

# How long one wait for the player's messages lasts: the cancel flag and the idle clock are checked between.
_INPUT_SLICE_S = 0.2
# How many made chunks may wait to be put on disk before making the next one waits for them.
_KEEP_BEHIND = 2
# A player sending garbage in a loop must not fill the log: the first few bad messages are logged, then a count.
_BAD_MESSAGES_LOGGED = 20
_SHUTDOWN = Failure(
    kind="internal",
    message="the worker ended the session (SIGTERM: the worker is stopping, or the job was stopped)",
    hint="start a new session with `worldplay play`",
)


def _fetch_inputs(run: JobRun, channel: PlayChannel, spec: PlaySpec) -> None:
    """A worker that does not share the player's output root makes the job directory here, with the image
    the player put in Redis (checked against the spec's checksum by `run.inputs`); the outputs then stay on
    this host, where `Ended.output_dir` says."""
    image = channel.take_image()
    if run.directory.is_dir() or image is None:
        return
    run.directory.parent.mkdir(parents=True, exist_ok=True)
    create_job_dir(run.directory, run.settings)
    write_job_file(run.directory / spec.image.file, image)
    run.reporter.log(f"the player's output root is not shared with this worker: outputs go to {run.directory}")


class _Stopped(Exception):
    """SIGTERM arrived while the session played: a cancel's kill, a timeout's or a worker shutdown's."""


def run_play(job: Job, spec_data: dict) -> dict:
    """The body of the `worker.tasks.play` task."""
    run = JobRun(job, PlayManifest)
    channel = PlayChannel(run.conn, job.id)
    spec: PlaySpec | None = None
    session: Session | None = None
    terminate = _RaiseOnSigterm()
    try:
        with terminate:
            spec = PlaySpec.model_validate(spec_data)
            if run.attempt > 1:
                refuse(
                    "a live session is never run twice: its player left with the first run",
                    "start a new session with `worldplay play`",
                )
            _fetch_inputs(run, channel, spec)
            inputs = run.inputs(spec)
            run.claim(spec)
            session = Session(run, spec, channel, inputs.image_path)
            reason = session.play()
        return session.finish(reason)
    except BaseException as exc:
        stopped = isinstance(exc, _Stopped)
        if stopped:
            canceled = run.conn.exists(cancel_key(job.id))
            exc = JobCanceled("canceled by the user") if canceled else JobFailed(_SHUTDOWN)
        # Even a run that no longer owns its job finishes its files (records nothing, though): a session is
        # never re-run, so nobody else will.
        outputs = session.save_outputs("canceled" if isinstance(exc, JobCanceled) else "failed") if session else {}
        try:
            run.record_failure(exc, spec, **outputs)
        finally:
            _publish_end(channel, run, exc, spec, outputs)
        if stopped:
            raise exc from None
        raise
    finally:
        if session is not None:
            session.close()
        terminate.restore()
        run.end_processes()


def _publish_end(channel: PlayChannel, run: JobRun, exc: BaseException, spec: PlaySpec | None, outputs: dict) -> None:
    outcome: PlayOutcome | None = outputs.get("play")
    chunks, frames = (outcome.chunks, outcome.frames) if outcome else (0, 0)
    output_dir = str(run.directory)
    if isinstance(exc, JobCanceled):
        channel.publish(
            Ended(
                reason="canceled", chunks=chunks, frames=frames, output_dir=output_dir, message="canceled by the user"
            )
        )
        return
    failure = classify(exc, spec)
    channel.publish(Failed(message=failure.message, hint=failure.hint, chunks=chunks, output_dir=output_dir))


class _RaiseOnSigterm:
    """While the session plays, SIGTERM (the worker ending the job's tree) raises `_Stopped` in the main
    thread, so the session still saves its outputs within the kill grace; afterwards SIGTERM is ignored
    until `restore` (the grace's SIGKILL bounds the save). Only the main thread can set handlers (the work
    horse runs its job there)."""

    def __init__(self) -> None:
        self._previous = None
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _RaiseOnSigterm:
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _raise(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the save that follows must not be interrupted
        raise _Stopped("SIGTERM")

    def restore(self) -> None:
        if self._active and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def open_source(engine: str) -> ChunkSource:
    if engine not in SOURCES:
        refuse(f"engine {engine!r} cannot play live", f"play runs on: {', '.join(SOURCES)}")
    module_name, _, attribute = SOURCES[engine].partition(":")
    return getattr(importlib.import_module(module_name), attribute)()


class _Liveness(threading.Thread):
    """Refreshes the worker liveness key until stopped, whatever the main thread is busy with."""

    def __init__(self, channel: PlayChannel):
        super().__init__(name="play-liveness", daemon=True)
        self.channel = channel
        self.stopped = threading.Event()

    def run(self) -> None:
        import redis

        while True:
            try:
                self.channel.touch_worker()
            except redis.RedisError:
                pass  # Redis away for a moment: the next turn tries again (the key outlives a few misses)
            if self.stopped.wait(WORKER_ALIVE_EVERY_S):
                return


class _Keeper(threading.Thread):
    """Puts each published chunk on disk, in order, while the next one is made (encoding a segment takes
    about as long as a preview chunk on a CPU, and would add to every chunk's time on a GPU): its segment,
    then `trajectory.json` and `timeline.json`, which make it count. At most `_KEEP_BEHIND` chunks wait.
    The first failure stops it; the session raises it at its next turn."""

    def __init__(self, directory: Path, fps: int):
        super().__init__(name="play-keeper", daemon=True)
        self.directory = directory
        self.fps = fps
        self.waiting: queue.Queue = queue.Queue(maxsize=_KEEP_BEHIND)
        self.error: BaseException | None = None
        self.chunks = 0  # kept so far
        self.frames = 0

    def keep(self, chunk: int, frames: np.ndarray, c2w: np.ndarray, timeline: Timeline) -> None:
        """Queue chunk `chunk` (`c2w` and `timeline` as they are with it)."""
        self.waiting.put((chunk, frames, c2w, timeline))

    def run(self) -> None:
        from trajectories import DEFAULT_K, Trajectory
        from worker.video import write_video

        while (item := self.waiting.get()) is not None:
            chunk, frames, c2w, timeline = item
            try:
                if self.error is None:
                    write_video(iter(frames), self.directory / SEGMENTS_DIR / segment_name(chunk), fps=self.fps)
                    trajectory = Trajectory(c2w, DEFAULT_K).to_official_json()
                    write_json_atomic(self.directory / "trajectory.json", trajectory)
                    write_json_atomic(self.directory / "timeline.json", timeline.model_dump(mode="json"))
                    self.chunks, self.frames = chunk + 1, self.frames + len(frames)
            except Exception as exc:  # noqa: BLE001 - handed to the session, which fails with it
                self.error = exc
            finally:
                self.waiting.task_done()
        self.waiting.task_done()

    def drain(self) -> None:
        """Wait until every queued chunk is kept (or failed to be)."""
        self.waiting.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.waiting.put(None)
        self.join()


class Session:
    """One session's state: the path played so far, the keys waiting for their chunk, the timeline."""

    def __init__(self, run: JobRun, spec: PlaySpec, channel: PlayChannel, image_path: Path):
        from trajectories import DEFAULT_K
        from trajectories.render import normalize_intrinsics

        self.run = run
        self.spec = spec
        self.channel = channel
        self.image_path = image_path
        self.reporter = run.reporter
        self.chunk_latents = spec.chunk_latents
        self.intrinsics = np.repeat(normalize_intrinsics(DEFAULT_K)[None], self.chunk_latents, axis=0)
        self.c2w = np.zeros((0, 4, 4))  # every latent generated so far
        self.pending: dict[int, Keys] = {}
        self.markers: list[str] = []
        self.prompt = spec.prompt
        self.prompts = [PromptChange(text=spec.prompt, from_chunk=0)]
        self.chunks: list[TimelineChunk] = []
        self.frames = 0
        self.bad_messages = 0
        self.source: ChunkSource | None = None
        self.work_dir = run.directory / f".attempt-{run.attempt}-{run.execution_id[:12]}"
        (run.directory / SEGMENTS_DIR).mkdir(exist_ok=True)
        self.liveness = _Liveness(channel)
        self.liveness.start()
        self.keeper = _Keeper(run.directory, spec.fps)
        self.keeper.start()

    # --- the loop ---------------------------------------------------------------------------------------

    def play(self) -> str:
        """Play until the session ends by itself; returns why (quit, idle, max_chunks)."""
        spec = self.spec
        self.reporter.stage("load")
        self.work_dir.mkdir(exist_ok=True)
        self.source = open_source(spec.engine)
        info = self.source.open(spec, self.image_path, self.work_dir, self.reporter)
        self.run.manifest["engine"].update(info.info, load_s=info.load_s, reused_weights=info.reused_weights)
        self.channel.publish(
            Ready(
                engine=spec.engine,
                variant=spec.variant,
                chunk_latents=self.chunk_latents,
                width=spec.width,
                height=spec.height,
                fps=spec.fps,
                load_s=info.load_s,
                reused_weights=info.reused_weights,
            )
        )
        self.reporter.stage("play")
        self.reporter.log(f"session ready ({spec.engine}/{spec.variant}, load {info.load_s:.1f} s); waiting for keys")
        # The played path must stay a trajectory this installation accepts (`limits.max_latents`).
        max_chunks = min(spec.max_chunks, self.run.settings.limits.max_latents // self.chunk_latents)
        if max_chunks < spec.max_chunks:
            self.reporter.log(f"the session ends after {max_chunks} chunks: limits.max_latents is the path's limit")
        last_heard = time.monotonic()
        while True:
            chunk = len(self.chunks)
            if chunk >= max_chunks:
                return "max_chunks"
            for message in self.channel.inputs(0 if chunk in self.pending else _INPUT_SLICE_S):
                last_heard = time.monotonic()
                if isinstance(message, End):
                    return "quit"
                self._take(message, chunk)
            self.reporter.check_cancel()
            self.keeper.raise_error()
            if chunk in self.pending:
                self._generate(chunk, self.pending.pop(chunk))
                # A player waiting for a slow chunk has nothing to say: the idle clock starts after it.
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard > spec.idle_timeout_s:
                return "idle"

    def _take(self, message, next_chunk: int) -> None:
        if isinstance(message, BadMessage):
            self._skip(str(message))
        elif isinstance(message, Keys):
            if len(message.latents) != self.chunk_latents:
                self._skip(
                    f"keys for chunk {message.chunk} name {len(message.latents)} latents, not {self.chunk_latents}"
                )
            elif message.chunk < next_chunk:
                self._skip(f"keys for chunk {message.chunk}, which is already made")
            elif message.chunk > next_chunk + self.spec.ahead_chunks:
                self._skip(f"keys for chunk {message.chunk}, more than {self.spec.ahead_chunks} ahead of {next_chunk}")
            else:
                if message.chunk in self.pending:
                    self.reporter.log(f"keys for chunk {message.chunk} sent again: the last ones count")
                self.pending[message.chunk] = message
        elif isinstance(message, SetPrompt):
            self.prompt = message.text
            self.reporter.log(f"prompt from the next chunk: {message.text[:120]}")
        elif isinstance(message, Marker):
            self.markers.append(message.label)

    def _skip(self, why: str) -> None:
        self.bad_messages += 1
        if self.bad_messages <= _BAD_MESSAGES_LOGGED:
            self.reporter.log(f"skipped a message: {why}")
        if self.bad_messages == _BAD_MESSAGES_LOGGED:
            self.reporter.log("further skipped messages are only counted (in the manifest)")

    def _generate(self, chunk: int, keys: Keys) -> None:
        from trajectories.actions import compute_actions
        from trajectories.poses import keys_motion, motions_to_c2w

        held = [sorted(set(latent)) for latent in keys.latents]
        if chunk == 0:
            held[0] = []  # latent 0 is the input image: no motion, action 0
            poses = motions_to_c2w([keys_motion(latent) for latent in held[1:]])
            actions = compute_actions(poses)
        else:
            poses = motions_to_c2w([keys_motion(latent) for latent in held], start=self.c2w[-1])
            actions = compute_actions(poses)[1:]
            poses = poses[1:]
        if self.prompt != self.prompts[-1].text:
            self.prompts.append(PromptChange(text=self.prompt, from_chunk=chunk))
        markers, self.markers = self.markers, []

        started = time.monotonic()
        made = self.source.generate(chunk, poses, self.intrinsics, actions, self.prompt)
        generate_s = time.monotonic() - started
        expected = (frames_of_chunk(chunk, self.chunk_latents), self.spec.height, self.spec.width, 3)
        if made.frames.shape != expected or made.frames.dtype != np.uint8:
            raise JobFailed(
                Failure(
                    kind="engine_error",
                    message=f"chunk {chunk}: the {self.spec.engine} source made frames {made.frames.shape} "
                    f"{made.frames.dtype}, expected {expected} uint8",
                )
            )
        jpegs = [_jpeg(frame, self.spec.jpeg_quality) for frame in made.frames]
        latency_s = max(0.0, time.time() - keys.sent_at)
        self.channel.publish(
            Chunk(
                chunk=chunk,
                actions=[int(action) for action in actions],
                keys=held,
                prompt=self.prompt,
                num_frames=len(made.frames),
                first_frame=self.frames,
                generate_s=round(generate_s, 4),
                latency_s=round(latency_s, 4),
                context=made.context,
            ),
            jpegs,
        )
        self.c2w = np.concatenate([self.c2w, poses])
        self.chunks.append(
            TimelineChunk(
                chunk=chunk,
                keys=held,
                actions=[int(action) for action in actions],
                prompt_index=len(self.prompts) - 1,
                first_frame=self.frames,
                num_frames=len(made.frames),
                generate_s=round(generate_s, 4),
                markers=markers,
            )
        )
        self.frames += len(made.frames)
        self.keeper.keep(chunk, made.frames, self.c2w, self.timeline())
        self.reporter.log(
            f"chunk {chunk}: {' '.join('+'.join(latent) or '-' for latent in held)} -> actions "
            f"{[int(action) for action in actions]}, {generate_s:.2f} s"
        )
        JobMeta.set_progress(self.run.job.meta, Progress(stage="play", step=len(self.chunks), chunk=len(self.chunks)))
        JobMeta.set_play(
            self.run.job.meta,
            {
                "chunks": len(self.chunks),
                "frames": self.frames,
                "latency_s": round(latency_s, 3),
                "generate_s": round(generate_s, 3),
                "prompt": self.prompt[:120],
            },
        )
        self.reporter.save_meta()

    def timeline(self) -> Timeline:
        return Timeline(
            chunk_latents=self.chunk_latents, fps=self.spec.fps, prompts=list(self.prompts), chunks=list(self.chunks)
        )

    # --- the end ----------------------------------------------------------------------------------------

    def save_outputs(self, reason: str) -> dict:
        """Join the kept chunks into `video.mp4`; returns the manifest's `video` and `play` fields."""
        from worker.video import VideoError

        # What was published and not yet kept is kept now (a failure to keep it ends with the chunks before).
        self.keeper.drain()
        if self.keeper.error is not None:
            self.reporter.log(f"keeping the chunks stopped at chunk {self.keeper.chunks}: {self.keeper.error}")
        outcome = PlayOutcome(
            reason=reason, chunks=self.keeper.chunks, frames=self.keeper.frames, skipped_messages=self.bad_messages
        )
        video = None
        if outcome.chunks:
            try:
                final = join_session_video(self.run.directory, detached=True)
            except (OSError, ValueError, VideoError) as exc:
                # The session's end is still recorded; the segments stay for `join_session_video` later.
                self.reporter.log(f"could not join the chunks into video.mp4: {exc}")
            else:
                video = VideoInfo(
                    frames=outcome.frames,
                    width=self.spec.width,
                    height=self.spec.height,
                    fps=self.spec.fps,
                    bytes=final.stat().st_size,
                )
                JobMeta.set_video(self.run.job.meta, str(final))
        return {"video": video, "play": outcome}

    def finish(self, reason: str) -> dict:
        """A session that ended by itself (quit, idle, max_chunks): outputs, 'finished' manifest, `Ended`."""
        self.keeper.drain()
        self.keeper.raise_error()
        outputs = self.save_outputs(reason)
        self.reporter.finish()
        self.run.write_manifest("finished", **outputs)
        kept: PlayOutcome = outputs["play"]
        self.reporter.log(f"session ended ({reason}): {kept.chunks} chunks, {kept.frames} frames")
        output_dir = str(self.run.directory)
        self.channel.publish(Ended(reason=reason, chunks=kept.chunks, frames=kept.frames, output_dir=output_dir))
        return {
            "video": str(self.run.directory / "video.mp4") if outputs["video"] else None,
            "output_dir": output_dir,
            "reason": reason,
            "chunks": kept.chunks,
            "frames": kept.frames,
            "duration_s": round(time.time() - self.run.started_at, 3),
        }

    def close(self) -> None:
        """Release the source's state and the liveness key, however the session ended."""
        import shutil

        import redis

        try:
            if self.source is not None:
                self.source.close()
        finally:
            self.keeper.stop()
            self.liveness.stopped.set()
            self.liveness.join(timeout=WORKER_ALIVE_EVERY_S + 1)
            try:
                self.channel.release_worker()
            except redis.RedisError:
                pass  # the key expires by itself
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def join_session_video(directory: Path, detached: bool = False) -> Path:
    """`video.mp4` of a session's job directory: the segments of the chunks its `timeline.json` lists, joined
    without re-encoding. For a session killed outright too (nothing joined them then).

    `detached`: the join runs outside the job's process tree (its own session, without the job's marker),
    so a cancel ending that tree during the kill grace does not end the join the session waits for."""
    from worker.video import join_videos

    timeline = Timeline.model_validate_json((directory / "timeline.json").read_text())
    parts = [directory / SEGMENTS_DIR / segment_name(chunk.chunk) for chunk in timeline.chunks]
    env = None
    if detached:
        env = {name: value for name, value in os.environ.items() if name != proctree.MARKER_ENV}
    final = directory / "video.mp4"
    join_videos(parts, final, env=env, new_session=detached)
    return final
