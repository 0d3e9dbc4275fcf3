"""Named trajectories shipped as package data (`presets.json`), each valid for every AR model variant."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trajectories.model import Trajectory, parse_pose_string


@dataclass(frozen=True)
class Preset:
    name: str
    pose: str
    description: str

    def trajectory(self) -> Trajectory:
        trajectory = parse_pose_string(self.pose)
        return Trajectory(trajectory.c2w, trajectory.K, trajectory.actions, source=self.name)


def _load_presets() -> dict[str, Preset]:
    data = json.loads((Path(__file__).with_name("presets.json")).read_text(encoding="utf-8"))
    return {name: Preset(name, entry["pose"], entry["description"]) for name, entry in data["presets"].items()}


PRESETS: dict[str, Preset] = _load_presets()
