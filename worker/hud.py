"""A job's HUD video: `video_hud.mp4`, its clean `video.mp4` with the keys of its trajectory drawn on.

The runner writes it at the end of a job asked `--hud`; `python -m worker.hud JOB_DIR` (what `worldplay jobs
hud JOB` runs, since the CLI never imports the worker) adds it to a finished job afterwards and lists it in
the job's manifest. The keys are `trajectories.hud`, the overlay the preview engine and training validation
draw, one action per frame as `trajectories.render.frame_actions` assigns them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.video import read_video_info, write_hud_video
from worldplay_cli.contract.queue import write_json_atomic
from worldplay_cli.contract.specs import HUD_VIDEO_FILE, VIDEO_FILE, VideoInfo

TRAJECTORY_FILE = "trajectory.json"
MANIFEST_FILE = "manifest.json"


def write_trajectory_hud(video: Path, trajectory: Path, path: Path, fps: float) -> Path:
    """`path`: `video` with the keys of the trajectory file `trajectory` (official JSON) drawn on."""
    from trajectories import load_trajectory
    from trajectories.render import frame_actions

    return write_hud_video(video, frame_actions(load_trajectory(trajectory)), path, fps)


def add_to_job(job_dir: Path) -> VideoInfo:
    """Write `<job_dir>/video_hud.mp4` from the finished job's video and trajectory; list it in the manifest."""
    video, hud = job_dir / VIDEO_FILE, job_dir / HUD_VIDEO_FILE
    num_frames, width, height, fps = read_video_info(video)
    write_trajectory_hud(video, job_dir / TRAJECTORY_FILE, hud, fps)
    info = VideoInfo(file=HUD_VIDEO_FILE, frames=num_frames, width=width, height=height, fps=fps,
                     bytes=hud.stat().st_size)  # fmt: skip
    manifest_path = job_dir / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        others = [entry for entry in manifest.get("videos", []) if entry.get("file") != HUD_VIDEO_FILE]
        manifest["videos"] = [*others, info.model_dump()]
        write_json_atomic(manifest_path, manifest)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_dir", type=Path)
    args = parser.parse_args(argv)
    info = add_to_job(args.job_dir)
    print(json.dumps({"video_hud": str(args.job_dir / HUD_VIDEO_FILE), **info.model_dump()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
