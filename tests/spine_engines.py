"""Engines that misbehave on purpose, plugged into real workers via WORLDPLAY_EXTRA_ENGINES.

`slow`: reports `spec.steps` steps of 0.1 s each, records its process id, then renders a plain video.
`tree`: starts a child in its own session that ignores SIGTERM and starts a grandchild that does the
same (like torchrun ranks), records their pids, and never finishes on its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = "slow=spine_engines:SlowEngine,tree=spine_engines:TreeEngine"

_STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids_file = sys.argv[1]
if sys.argv[2] == "parent":
    subprocess.Popen([sys.executable, "-c", sys.argv[3], pids_file, "child", ""], start_new_session=True)
with open(pids_file, "a") as handle:
    handle.write(f"{os.getpid()}\\n")
while True:
    time.sleep(0.1)
"""


class SlowEngine:
    name = "slow"
    uses_gpu = False

    def run(self, spec, inputs, out_dir, reporter):
        import os

        from worker.engines import EngineResult

        (inputs.job_dir / "horse.pid").write_text(str(os.getpid()))
        reporter.stage("sleep")
        for step in range(1, spec.steps + 1):
            time.sleep(0.1)
            reporter.update(step, spec.steps)
        from worker.video import write_video

        frames = (np.full((spec.height, spec.width, 3), 40 * i % 255, np.uint8) for i in range(spec.frames))
        write_video(frames, out_dir / "video.mp4", fps=spec.fps)
        return EngineResult(video=out_dir / "video.mp4")


class TreeEngine:
    name = "tree"
    uses_gpu = False

    def run(self, spec, inputs, out_dir, reporter):
        pids_file: Path = inputs.job_dir / "pids.txt"
        subprocess.Popen([sys.executable, "-c", _STUBBORN, str(pids_file), "parent", _STUBBORN], start_new_session=True)
        reporter.stage("spin")
        step = 0
        while True:
            step += 1
            reporter.update(step)
            time.sleep(0.05)
