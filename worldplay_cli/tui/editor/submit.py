"""Submit = enqueue one generation job for the edited trajectory, through the same path as `generate --queue`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trajectories import Trajectory
from worldplay_cli.tui.submit import Submitted, enqueue_prepared

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.contract.settings import Settings


@dataclass(frozen=True)
class SubmitForm:
    prompt: str
    variant: str
    seed: int = 1
    engine: str | None = None  # None: the settings' default engine


# What a job's manifest names as the trajectory's source when it was never saved.
UNSAVED_SOURCE = "worldplay traj edit (unsaved)"

Submitter = Callable[[Trajectory, SubmitForm, "str | None"], Submitted]


def submit_trajectory(
    trajectory: Trajectory,
    form: SubmitForm,
    pose: str | None,
    *,
    settings: Settings,
    connect: Callable[[], Redis],
    image: Path | None = None,
    queue: str | None = None,
) -> Submitted:
    """Validate, write the job's inputs and enqueue it. Raises BadInput/WorldplayError/TrajectoryError.

    `pose` is how the job records where its trajectory came from: the pose string when it reproduces the
    trajectory exactly, or the saved file. Without one, the trajectory goes through a temporary file
    (its contents are copied into the job directory, so nothing refers to the file afterwards).
    """
    from worldplay_cli.submit import GenerateRequest, prepare

    with tempfile.TemporaryDirectory(prefix="worldplay-edit-") as scratch:
        unsaved = pose is None
        if unsaved:
            pose = str(Path(scratch) / "edited-trajectory.json")
            trajectory.save(pose)
        request = GenerateRequest(
            prompt=form.prompt, image=image, pose=pose, engine=form.engine, variant=form.variant, seed=form.seed
        )
        prepared = prepare(request, settings)
    if unsaved:
        spec = prepared.spec
        source = spec.trajectory.model_copy(update={"source": UNSAVED_SOURCE})
        prepared = replace(prepared, spec=spec.model_copy(update={"trajectory": source}))
    return enqueue_prepared(connect(), settings, prepared, queue)
