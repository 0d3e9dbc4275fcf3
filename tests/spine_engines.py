"""Engines that misbehave on purpose, plugged into real workers via WORLDPLAY_EXTRA_ENGINES.

`slow`: reports `spec.steps` steps of 0.1 s each, records its process id, then renders a plain video.
`tree`: starts a child in its own session that ignores SIGTERM and starts a grandchild that does the
same (like torchrun ranks), records their pids, and never finishes on its own.
`daemons`: leaves two double-forked daemons behind and finishes: one with the job's process marker (it must
be ended with the job) and one started without it, like the resident supervisor (it must outlive the job);
each records "pid ppid" once its parent is gone, and the unmarked one exits when `release` appears.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = "slow=spine_engines:SlowEngine,tree=spine_engines:TreeEngine,daemons=spine_engines:DaemonsEngine"

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


# argv: record file, release file. Fork, leave the child to be orphaned, and record who adopted it.
_DAEMON = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
parent = os.getpid()
if os.fork():
    os._exit(0)
os.setsid()
while os.getppid() == parent:
    time.sleep(0.01)
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {os.getppid()}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
"""


class DaemonsEngine:
    name = "daemons"
    uses_gpu = False

    def run(self, spec, inputs, out_dir, reporter):
        import os

        from worker import proctree
        from worker.engines import EngineResult
        from worker.video import write_video

        unmarked = {name: value for name, value in os.environ.items() if name != proctree.MARKER_ENV}
        release = inputs.job_dir / "release"
        for name, env in (("marked", None), ("unmarked", unmarked)):
            subprocess.run([sys.executable, "-c", _DAEMON, str(inputs.job_dir / name), str(release)], env=env)
        while not all((inputs.job_dir / name).exists() for name in ("marked", "unmarked")):
            time.sleep(0.01)
        frames = (np.zeros((spec.height, spec.width, 3), np.uint8) for _ in range(spec.frames))
        write_video(frames, out_dir / "video.mp4", fps=spec.fps)
        return EngineResult(video=out_dir / "video.mp4")
