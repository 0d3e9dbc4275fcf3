"""mp4 writing with the real bundled ffmpeg: decodable output, atomic publish, nothing left on failure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trajectories import resolve
from trajectories.render import preview_frames
from worker.video import VideoError, read_video_frames, read_video_info, write_video
from worldplay_cli.assets import EXAMPLE_IMAGE


def gradient_frames(count: int, width: int = 64, height: int = 48):
    column, row = np.meshgrid(np.linspace(0, 200, width), np.linspace(0, 200, height))
    for index in range(count):
        frame = np.stack([column, row, np.full_like(column, 10.0 * index)], axis=-1)
        yield frame.astype(np.uint8)


def test_written_video_decodes_to_the_frames_size_and_rate(tmp_path):
    path = tmp_path / "video.mp4"
    info = write_video(gradient_frames(10), path, fps=24)
    assert (info.path, info.num_frames, info.width, info.height, info.fps) == (path, 10, 64, 48, 24.0)
    assert read_video_info(path) == (10, 64, 48, 24.0)
    decoded = read_video_frames(path).astype(int)
    original = np.stack(list(gradient_frames(10))).astype(int)
    assert decoded.shape == original.shape
    assert np.abs(decoded - original).mean() < 3  # lossy, but the same pictures
    assert [entry.name for entry in tmp_path.iterdir()] == ["video.mp4"]


def test_odd_sizes_are_padded_to_even(tmp_path):
    info = write_video(gradient_frames(3, width=63, height=47), tmp_path / "odd.mp4")
    assert (info.width, info.height) == (64, 48)
    assert read_video_info(tmp_path / "odd.mp4")[:3] == (3, 64, 48)


def failing_frames(error: BaseException):
    yield from gradient_frames(5)
    raise error


@pytest.mark.parametrize("error", [RuntimeError("renderer crashed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_write_leaves_no_file(tmp_path, error):
    path = tmp_path / "video.mp4"
    with pytest.raises(type(error)):
        write_video(failing_frames(error), path)
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_are_refused_and_leave_no_file(tmp_path):
    def size_changes():
        yield np.zeros((48, 64, 3), np.uint8)
        yield np.zeros((32, 64, 3), np.uint8)

    with pytest.raises(VideoError, match="size changed"):
        write_video(size_changes(), tmp_path / "a.mp4")
    with pytest.raises(VideoError, match="uint8"):
        write_video([np.zeros((48, 64, 3), np.float32)], tmp_path / "b.mp4")
    with pytest.raises(VideoError, match="no frames"):
        write_video([], tmp_path / "c.mp4")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_video_is_not_overwritten_unless_asked(tmp_path):
    path = tmp_path / "video.mp4"
    path.write_bytes(b"earlier result")
    with pytest.raises(FileExistsError):
        write_video(gradient_frames(2), path)
    assert path.read_bytes() == b"earlier result"
    write_video(gradient_frames(2), path, overwrite=True)
    assert read_video_info(path)[0] == 2
    assert [entry.name for entry in tmp_path.iterdir()] == ["video.mp4"]


def test_preview_of_a_trajectory_encodes_to_its_frame_count(tmp_path):
    trajectory = resolve("w-2, right-2, d-1")
    image = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))
    info = write_video(preview_frames(image, trajectory, 160, 96), tmp_path / "preview.mp4")
    assert read_video_info(info.path) == (trajectory.num_frames, 160, 96, 24.0)
