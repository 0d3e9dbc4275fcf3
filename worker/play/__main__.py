"""`python -m worker.play JOB_DIR`: the outputs of a session whose worker was killed before it made them.

`video.mp4` joins the chunks its `timeline.json` lists without re-encoding (`join_session_video`, the call
a session makes at its end): their segments, each made first from the chunk's kept JPEG frames where the
session had not made it yet; `trajectory.json` is the path the timeline's keys made. Run it where the job directory is (a worker host, or any host sharing the
output root). A directory that already has its video, or is no session's, is refused with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.play.session import join_session_video
from worker.video import VideoError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.play", description=__doc__.splitlines()[0])
    parser.add_argument("job_dir", type=Path)
    args = parser.parse_args(argv)
    directory: Path = args.job_dir
    if not (directory / "timeline.json").is_file():
        print(f"error: {directory} has no timeline.json: not a session's job directory", file=sys.stderr)
        return 2
    if (directory / "video.mp4").exists():
        print(f"error: {directory / 'video.mp4'} already exists (outputs are never overwritten)", file=sys.stderr)
        return 2
    try:
        video = join_session_video(directory)
    except (OSError, ValueError, VideoError) as exc:
        print(f"error: cannot join the session's chunks: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"video": str(video)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
