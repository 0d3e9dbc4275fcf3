"""The `preview` engine: the reference image flown along the trajectory, on the CPU, without weights.

A thin adapter: rendering is `trajectories.render.preview_frames`, encoding is `worker.video.write_video`.
It lets a user check a trajectory (and the whole queue path) before spending GPU hours, so it also logs
`trajectories.coverage.coverage_warning` when the camera leaves most of the reference image behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from worker.job import EngineResult, JobInputs

if TYPE_CHECKING:
    from worker.progress import Reporter
    from worldplay_cli.contract.specs import JobSpec


class PreviewEngine:
    name = "preview"
    uses_gpu = False

    def run(self, spec: JobSpec, inputs: JobInputs, out_dir: Path, reporter: Reporter) -> EngineResult:
        from trajectories.coverage import coverage_warning
        from trajectories.latents import CHUNK
        from trajectories.render import preview_frames
        from worker.video import write_video
        from worldplay_cli.contract.specs import HUD_VIDEO_FILE, VIDEO_FILE

        reporter.plan({"load": 0.02, "render": 0.98})
        reporter.stage("load")
        image = inputs.load_image()
        trajectory = inputs.load_trajectory()
        warning = coverage_warning(trajectory, spec.width, spec.height)
        if warning is not None:
            reporter.log(f"warning: {warning}")
        reporter.stage("render")
        frames = preview_frames(image, trajectory, spec.width, spec.height, hud=False)

        latents_per_chunk = CHUNK[spec.variant]
        num_chunks = spec.trajectory.num_latents // latents_per_chunk

        def counted():
            for index, frame in enumerate(frames):
                yield frame
                # Frame 0 is latent 0; every later latent is 4 frames. Chunks as the model would run them.
                chunk = ((index + 3) // 4) // latents_per_chunk + 1
                reporter.update(index + 1, spec.frames, chunk=min(chunk, num_chunks), num_chunks=num_chunks)

        video = out_dir / VIDEO_FILE
        write_video(counted(), video, fps=spec.fps)
        if spec.hud:
            # rendered again rather than drawn over video.mp4: the preview's HUD also says which frames
            # look mostly past the reference image, which only the renderer knows
            reporter.stage("hud")
            hud_frames = preview_frames(image, trajectory, spec.width, spec.height, hud=True)
            write_video(hud_frames, out_dir / HUD_VIDEO_FILE, fps=spec.fps)
        return EngineResult(video=video, info={"renderer": "trajectories.render.preview_frames", "hud": spec.hud})
