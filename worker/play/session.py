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
   (`chunk_path`: `trajectories.poses.keys_motion`, latent 0 at the identity), action ids are
   `compute_actions` over them, exactly the official derivation; the source turns them into frames,
   encoded once as JPEGs. The chunk is kept *before* it is published, cheaply (a few ms): its JPEGs
   written as `segments/chunk-NNNNN/000.jpg`... (a directory renamed into place whole), then
   `timeline.json` (`contract.play.Timeline`, the record of kept chunks, with the keys that determine the
   path) rewritten atomically: a chunk counts once the timeline lists it. Then `Chunk` carries the same
   JPEGs to the player and the job's meta (`JobMeta.play`) is updated. So whatever ends the session
   afterwards, every chunk its player was shown is on disk; one that cannot be kept fails the session
   unseen. The chunk's H.264 segment
   (`segments/chunk-NNNNN.mp4`, about a second of CPU at 480p) is made from its frames by a thread while
   the next chunk is made (`_Encoder`); at most `_ENCODE_BEHIND` chunks wait for it.
4. Ends on `End` (quit), `idle_timeout_s` without any message from the player and no chunk being made
   (idle), `max_chunks`, a cancel (`worldplay jobs cancel`: the reporter's flag, or the worker's SIGTERM
   during the kill grace), a timeout or a failure. Every end makes `video.mp4` of the timeline's chunks
   (`join_session_video`: the segments, and for a chunk whose segment is not made yet one made now from its
   JPEGs; then a stream-copy join, exactly the frames generated) and `trajectory.json` (official JSON of
   the path the timeline's keys made: written once, it costs 100 times the timeline), writes the manifest (finished, stopped or
   failed) and publishes `Ended` or `Failed`, in that order, so a player that reads `Ended` finds the
   outputs. An end by itself lets the encoder finish its segments first; a stopped session (cancel,
   SIGTERM, failure) does not wait for it, the kill grace is short: the chunks it had not encoded are made
   from their JPEGs, outside the job's process tree so the cancel ending that tree spares them.

A session killed outright (SIGKILL, a host gone) cannot make its video: its job directory still holds
every kept chunk (`timeline.json` lists them and their keys, `segments/` their segments or JPEGs), and
`python -m worker.play JOB_DIR` (`join_session_video`) makes `video.mp4` and `trajectory.json` of them; the
reaper marks the job failed. A session is never run twice: its player left with the first run (should
its job come back to a queue, a second attempt is refused at once).

`WORLDPLAY_PLAY_DEFER_SEGMENTS=1` in a worker's environment makes no segment while a session plays: every
chunk stays its JPEGs until the end makes the segments (a host whose CPU cannot spare the encoding while
it plays; the tests use it to end sessions with none of their segments made).
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import queue
import shutil
import signal
import stat
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
    chunk_frames_name,
    frames_of_chunk,
    segment_name,
)
from worldplay_cli.contract.queue import write_json_atomic, write_text_atomic
from worldplay_cli.contract.settings import create_job_dir, write_job_file
from worldplay_cli.contract.specs import Failure, Progress, VideoInfo, cancel_key

if TYPE_CHECKING:
    from rq.job import Job

    from worker.play.source import ChunkSource

# The chunk source of each engine that can play.
SOURCES = {"preview": "worker.play.preview:PreviewSource", "native": "worker.play.native:NativeSource"}

# How long one wait for the player's messages lasts: the cancel flag and the idle clock are checked between.
_INPUT_SLICE_S = 0.2
# How many kept chunks may wait for their segment before making the next one waits for the encoder.
_ENCODE_BEHIND = 2
DEFER_SEGMENTS_ENV = "WORLDPLAY_PLAY_DEFER_SEGMENTS"
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
    if run.directory.is_dir() or (image is None and spec.image is not None):
        return
    run.directory.parent.mkdir(parents=True, exist_ok=True)
    create_job_dir(run.directory, run.settings)
    if image is not None:
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
            session = Session(run, spec, channel, inputs.image_path if spec.image is not None else None)
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


class _Encoder(threading.Thread):
    """Makes each kept chunk's segment from its frames, in order, while the next chunk is made (encoding a
    segment takes about as long as a preview chunk on a CPU, and would add to every chunk's time on a GPU).
    At most `_ENCODE_BEHIND` chunks wait. The first failure stops it; the session raises it at its next turn
    (the chunks stay kept: their JPEGs are on disk)."""

    def __init__(self, directory: Path, fps: int):
        super().__init__(name="play-encoder", daemon=True)
        self.directory = directory
        self.fps = fps
        self.waiting: queue.Queue = queue.Queue(maxsize=_ENCODE_BEHIND)
        self.error: BaseException | None = None
        self.abandoned = threading.Event()

    def encode(self, chunk: int, frames: np.ndarray) -> None:
        self.waiting.put((chunk, frames))

    def run(self) -> None:
        from worker.video import write_video

        while (item := self.waiting.get()) is not None:
            chunk, frames = item
            try:
                if self.error is None and not self.abandoned.is_set():
                    write_video(iter(frames), self.directory / SEGMENTS_DIR / segment_name(chunk), fps=self.fps)
            except Exception as exc:  # noqa: BLE001 - handed to the session, which fails with it
                self.error = exc
            finally:
                self.waiting.task_done()
        self.waiting.task_done()

    def drain(self) -> None:
        """Wait until every queued segment is made (or failed to be)."""
        self.waiting.join()

    def abandon(self) -> None:
        """Start no other segment (the session's end makes what is left, without waiting for this thread)."""
        self.abandoned.set()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.abandon()
        self.waiting.put(None)
        self.join()


class Session:
    """One session's state: the path played so far, the keys waiting for their chunk, the timeline."""

    def __init__(self, run: JobRun, spec: PlaySpec, channel: PlayChannel, image_path: Path | None):
        from trajectories import DEFAULT_K
        from trajectories.render import normalize_intrinsics

        self.run = run
        self.spec = spec
        self.channel = channel
        self.image_path = image_path
        self.reporter = run.reporter
        self.chunk_latents = spec.chunk_latents
        self.intrinsics = np.repeat(normalize_intrinsics(DEFAULT_K)[None], self.chunk_latents, axis=0)
        self.last_pose: np.ndarray | None = None  # the path's end: the next chunk goes on from it
        self.pending: dict[int, Keys] = {}
        self.markers: list[str] = []
        self.prompt = spec.prompt
        self.prompts = [PromptChange(text=spec.prompt, from_chunk=0)]
        self.chunks: list[TimelineChunk] = []
        self.frames = 0
        self.kept = (0, 0)  # chunks and frames `timeline.json` lists
        self.bad_messages = 0
        self.source: ChunkSource | None = None
        self.work_dir = run.directory / f".attempt-{run.attempt}-{run.execution_id[:12]}"
        (run.directory / SEGMENTS_DIR).mkdir(exist_ok=True)
        self.liveness = _Liveness(channel)
        self.liveness.start()
        self.encoder: _Encoder | None = None
        if os.environ.get(DEFER_SEGMENTS_ENV, "") in ("", "0"):
            self.encoder = _Encoder(run.directory, spec.fps)
            self.encoder.start()

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
            if self.encoder is not None:
                self.encoder.raise_error()
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
        held = [sorted(set(latent)) for latent in keys.latents]
        if chunk == 0:
            held[0] = []  # latent 0 is the input image: no motion, action 0
        poses, actions = chunk_path(chunk, held, self.last_pose)
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
        self.last_pose = poses[-1]
        record = TimelineChunk(
            chunk=chunk,
            keys=held,
            actions=[int(action) for action in actions],
            prompt_index=len(self.prompts) - 1,
            first_frame=self.frames,
            num_frames=len(made.frames),
            generate_s=round(generate_s, 4),
            markers=markers,
        )
        self.chunks.append(record)
        self.frames += len(made.frames)
        self._keep(chunk, jpegs)
        latency_s = max(0.0, time.time() - keys.sent_at)
        self.channel.publish(
            Chunk(
                chunk=chunk,
                actions=record.actions,
                keys=held,
                prompt=self.prompt,
                num_frames=len(made.frames),
                first_frame=record.first_frame,
                generate_s=round(generate_s, 4),
                latency_s=round(latency_s, 4),
                context=made.context,
            ),
            jpegs,
        )
        if self.encoder is not None:
            self.encoder.encode(chunk, made.frames)
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

    def _keep(self, chunk: int, jpegs: list[bytes]) -> None:
        """Put chunk `chunk` on disk so that it counts: its JPEGs, then the timeline with it (about 1 ms for
        the longest session; `trajectory.json`, which it determines, is 100 times that and waits for the end)."""
        keep_frames(self.run.directory, chunk, jpegs)
        write_text_atomic(self.run.directory / "timeline.json", self.timeline().model_dump_json(indent=2))
        self.kept = (len(self.chunks), self.frames)

    def timeline(self) -> Timeline:
        return Timeline(
            chunk_latents=self.chunk_latents, fps=self.spec.fps, prompts=list(self.prompts), chunks=list(self.chunks)
        )

    # --- the end ----------------------------------------------------------------------------------------

    def save_outputs(self, reason: str) -> dict:
        """`video.mp4` of the kept chunks; returns the manifest's `video` and `play` fields. A session that
        ended by itself has drained its encoder; any other end does not wait for it (the kill grace is short):
        the segments it has not made are made from the chunks' JPEGs."""
        from worker.video import VideoError

        if self.encoder is not None:
            self.encoder.abandon()
            if self.encoder.error is not None:
                self.reporter.log(f"making the segments stopped: {self.encoder.error}")
        chunks, frames = self.kept
        outcome = PlayOutcome(reason=reason, chunks=chunks, frames=frames, skipped_messages=self.bad_messages)
        video = None
        if outcome.chunks:
            try:
                final = join_session_video(self.run.directory, detached=True)
            except (OSError, ValueError, VideoError) as exc:
                # The session's end is still recorded; the chunks stay for `join_session_video` later.
                self.reporter.log(f"could not make video.mp4 of the chunks: {exc}")
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
        if self.encoder is not None:
            self.encoder.drain()
            self.encoder.raise_error()
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
            if self.encoder is not None:
                self.encoder.stop()
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


def keep_frames(directory: Path, chunk: int, jpegs: list[bytes]) -> None:
    """Chunk `chunk`'s JPEG frames as `SEGMENTS_DIR/chunk-NNNNN/000.jpg`...: written beside, then renamed into
    place whole, so a directory of that name always holds all of them."""
    final = directory / SEGMENTS_DIR / chunk_frames_name(chunk)
    if final.exists():
        raise FileExistsError(errno.EEXIST, "refusing to overwrite a chunk's kept frames", str(final))
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a kill's leftover: this chunk was never kept
    partial.mkdir(mode=stat.S_IMODE(final.parent.stat().st_mode))  # the output mode, as the job directory's
    for index, jpeg in enumerate(jpegs):
        write_job_file(partial / f"{index:03d}.jpg", jpeg)
    partial.rename(final)


def _kept_frames(directory: Path, chunk: TimelineChunk):
    from PIL import Image

    frames = sorted((directory / SEGMENTS_DIR / chunk_frames_name(chunk.chunk)).glob("*.jpg"))
    if len(frames) != chunk.num_frames:
        raise ValueError(
            f"chunk {chunk.chunk} has no segment and {len(frames)} kept frames, its timeline says {chunk.num_frames}"
        )
    for path in frames:
        with Image.open(path) as image:
            yield np.asarray(image.convert("RGB"))


def chunk_path(chunk: int, held: list[list[str]], last: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The poses [chunk_latents, 4, 4] and action ids of chunk `chunk`'s latents from the keys held in each
    (`trajectories.poses.keys_motion`), the path going on from `last`, the pose of the latent before; chunk 0
    starts at the identity with the input image (its first latent's keys are not read: action 0)."""
    from trajectories.actions import compute_actions
    from trajectories.poses import keys_motion, motions_to_c2w

    if chunk == 0:
        poses = motions_to_c2w([keys_motion(latent) for latent in held[1:]])
        return poses, compute_actions(poses)
    poses = motions_to_c2w([keys_motion(latent) for latent in held], start=last)
    return poses[1:], compute_actions(poses)[1:]


def write_played_trajectory(directory: Path, timeline: Timeline) -> None:
    """`trajectory.json` (official JSON, default K) of the path the timeline's keys made, as the session made
    it chunk by chunk."""
    from trajectories import DEFAULT_K, Trajectory

    poses = []
    for chunk in timeline.chunks:
        poses.append(chunk_path(chunk.chunk, chunk.keys, poses[-1][-1] if poses else None)[0])
    write_json_atomic(directory / "trajectory.json", Trajectory(np.concatenate(poses), DEFAULT_K).to_official_json())


def join_session_video(directory: Path, detached: bool = False) -> Path:
    """`video.mp4` and `trajectory.json` of a session's job directory, from the chunks its `timeline.json`
    lists: their segments, each made first from the chunk's kept JPEGs where it is not made yet, joined without
    re-encoding; then the JPEGs go (the segments hold the chunks). For a session killed outright too (nothing
    made its outputs then).

    `detached`: the encoders and the join run outside the job's process tree (their own session, without
    the job's marker), so a cancel ending that tree during the kill grace does not end what the session
    waits for."""
    from worker.video import join_videos, write_video

    timeline = Timeline.model_validate_json((directory / "timeline.json").read_text())
    if not timeline.chunks:
        raise ValueError("the session kept no chunk")
    write_played_trajectory(directory, timeline)
    env = None
    if detached:
        env = {name: value for name, value in os.environ.items() if name != proctree.MARKER_ENV}
    parts = []
    for chunk in timeline.chunks:
        segment = directory / SEGMENTS_DIR / segment_name(chunk.chunk)
        if not segment.is_file():
            try:
                write_video(_kept_frames(directory, chunk), segment, fps=timeline.fps, env=env, new_session=detached)
            except FileExistsError:
                pass  # the session's encoder made it meanwhile (whole: segments are linked into place finished)
        parts.append(segment)
    final = directory / "video.mp4"
    join_videos(parts, final, env=env, new_session=detached)
    for chunk in timeline.chunks:
        shutil.rmtree(directory / SEGMENTS_DIR / chunk_frames_name(chunk.chunk), ignore_errors=True)
    return final
