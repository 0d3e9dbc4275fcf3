"""mp4 writing and checking with the ffmpeg binary bundled in imageio-ffmpeg (no torch here).

``write_video`` encodes H.264 / yuv420p into a hidden temporary file next to the target and links it into
place only after ffmpeg exited cleanly, so a failed or interrupted write never leaves a file at ``path``
that could be taken for a result.
"""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Constant-quality H.264: visually clean for previews and a fraction of the size of the official crf 25.
DEFAULT_CRF = 20


class VideoError(RuntimeError):
    """ffmpeg failed, or the frames cannot be encoded (empty stream, changing size, wrong dtype)."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    width: int
    height: int
    fps: float


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column rather than crop content away."""
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def _check_frame(frame: np.ndarray, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(f"frame {index}: expected an HxWx3 uint8 array, got {frame.dtype} {frame.shape}")
    if shape is not None and frame.shape != shape:
        raise VideoError(f"frame {index}: size changed from {shape} to {frame.shape}")
    return frame


def write_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float = 24,
    *,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
    env: dict[str, str] | None = None,
    new_session: bool = False,
) -> VideoInfo:
    """Encode HxWx3 uint8 ``frames`` to an mp4 at ``path`` (H.264, yuv420p, even sides) atomically.

    Odd widths/heights are padded by one repeated row/column. With ``overwrite=False`` an existing file at
    ``path`` is never replaced (``FileExistsError``, checked again at the final link). ``env`` and
    ``new_session`` go to the ffmpeg process, as for ``join_videos``.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing video", str(path))
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial.mp4", dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    process: subprocess.Popen | None = None
    try:
        with tempfile.TemporaryFile() as stderr:
            num_frames, shape = 0, None
            for frame in frames:
                frame = _check_frame(frame, num_frames, shape)
                if process is None:
                    shape = frame.shape
                    process = _start_encoder(
                        imageio_ffmpeg.get_ffmpeg_exe(),
                        _even(frame).shape,
                        fps,
                        crf,
                        temporary,
                        stderr,
                        env,
                        new_session,
                    )
                try:
                    process.stdin.write(_even(frame).tobytes())
                except BrokenPipeError:
                    break  # ffmpeg died; its exit status and log below say why
                num_frames += 1
            if process is None:
                raise VideoError("no frames to write")
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            if process.wait() != 0:
                stderr.seek(0)
                log = stderr.read().decode(errors="replace").strip().splitlines()
                raise VideoError(f"ffmpeg failed (exit {process.returncode}): {log[-1] if log else 'no output'}")
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o644)  # mkstemp made it private; the result is an ordinary output file
        _publish(temporary, path, overwrite)
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        temporary.unlink(missing_ok=True)
        raise
    height, width = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    return VideoInfo(path=path, num_frames=num_frames, width=width, height=height, fps=float(fps))


def join_videos(
    parts: list[Path], path: str | os.PathLike, *, env: dict[str, str] | None = None, new_session: bool = False
) -> None:
    """Concatenate mp4 files made by ``write_video`` at one size and frame rate into ``path``, without
    re-encoding (ffmpeg's concat demuxer, stream copy), atomically and never over an existing file.

    ``env`` and ``new_session`` go to the ffmpeg process: a caller that must finish the join while its own
    process tree is being ended (a session saving its video during a cancel's grace) runs it apart."""
    import imageio_ffmpeg

    path = Path(path)
    if not parts:
        raise VideoError("no videos to join")
    if path.exists():
        raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing video", str(path))
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial.mp4", dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    listing = temporary.with_suffix(".txt")
    # The concat demuxer's list: one `file '<path>'` line each, a quote written as '\''.
    quoted = (str(Path(part).resolve()).replace("'", "'\\''") for part in parts)
    listing.write_text("".join(f"file '{name}'\n" for name in quoted))
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-movflags", "+faststart",
        "-f", "mp4", str(temporary),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, env=env, start_new_session=new_session)
        if result.returncode != 0:
            log = result.stderr.decode(errors="replace").strip().splitlines()
            raise VideoError(f"ffmpeg could not join {len(parts)} videos: {log[-1] if log else 'no output'}")
        os.chmod(temporary, 0o644)
        _publish(temporary, path, overwrite=False)
    finally:
        temporary.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)


def _start_encoder(
    executable: str,
    shape: tuple[int, ...],
    fps: float,
    crf: int,
    output: Path,
    stderr,
    env: dict[str, str] | None,
    new_session: bool,
) -> subprocess.Popen:
    height, width = shape[:2]
    command = [
        executable, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf),
        "-movflags", "+faststart", "-f", "mp4", str(output),
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=new_session
    )


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file into place in one step; without ``overwrite`` a hard link refuses to clobber."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except OSError as error:
        if error.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing video", str(path)) from error
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # Filesystems without hard links: the existence check at the start is the only guard left.
        os.replace(temporary, path)
        return
    temporary.unlink()


def read_video_info(path: str | os.PathLike) -> tuple[int, int, int, float]:
    """(num_frames, width, height, fps) of a video, counting frames by decoding all of them."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        metadata = next(reader)
        num_frames = sum(1 for _ in reader)
    finally:
        reader.close()
    width, height = metadata["size"]
    return num_frames, int(width), int(height), float(metadata["fps"])


def read_video_frames(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as (F, H, W, 3) uint8 (for tests and thumbnails; loads the whole clip)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        width, height = next(reader)["size"]
        frames = [np.frombuffer(chunk, np.uint8).reshape(height, width, 3) for chunk in reader]
    finally:
        reader.close()
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def iter_video_frames(path: str | os.PathLike) -> Iterable[np.ndarray]:
    """The frames of a video one at a time, (H, W, 3) uint8, without holding the clip."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        width, height = next(reader)["size"]
        for chunk in reader:
            yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def write_hud_video(source: str | os.PathLike, actions: np.ndarray, path: str | os.PathLike, fps: float) -> Path:
    """`source` with the keyboard HUD of one action id per frame (`trajectories.render.frame_actions`) drawn on
    every frame: the renderer the preview engine and training validation use. Written atomically to `path`;
    `source` is left as it is."""
    from trajectories.hud import Hud

    frames = iter_video_frames(source)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"{source} has no frames")
    overlay = Hud(first.shape[1], first.shape[0])

    def drawn():
        for index, frame in enumerate(itertools.chain([first], frames)):
            if index >= len(actions):
                raise VideoError(f"{source} has more frames than the {len(actions)} actions of its trajectory")
            yield overlay.draw(frame, int(actions[index]))

    write_video(drawn(), path, fps=fps)
    return Path(path)
