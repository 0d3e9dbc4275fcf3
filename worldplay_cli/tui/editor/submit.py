"""Submit = enqueue one generation job for the edited trajectory, through the same path as `generate --queue`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trajectories import Trajectory

if TYPE_CHECKING:
    from redis import Redis

    from worldplay_cli.settings import Settings


@dataclass(frozen=True)
class SubmitForm:
    prompt: str
    variant: str
    seed: int = 1


@dataclass(frozen=True)
class Submitted:
    job_id: str
    queue: str


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
    """Validate, write the job's inputs and enqueue it; returns the job id. Raises BadInput/WorldplayError.

    `pose` is how the job records where its trajectory came from: the pose string when it reproduces the
    trajectory exactly, or the saved file. Without one, the trajectory goes through a temporary file
    (its contents are copied into the job directory, so nothing refers to the file afterwards).
    """
    from worldplay_cli.schema import new_job_id
    from worldplay_cli.submit import GenerateRequest, check_output_root, prepare, submit

    with tempfile.TemporaryDirectory(prefix="worldplay-edit-") as scratch:
        unsaved = pose is None
        if unsaved:
            pose = str(Path(scratch) / "edited-trajectory.json")
            trajectory.save(pose)
        request = GenerateRequest(prompt=form.prompt, image=image, pose=pose, variant=form.variant, seed=form.seed)
        prepared = prepare(request, settings)
    if unsaved:
        spec = prepared.spec
        source = spec.trajectory.model_copy(update={"source": UNSAVED_SOURCE})
        prepared = replace(prepared, spec=spec.model_copy(update={"trajectory": source}))
    check_output_root(settings)
    queue_name = queue or settings.queue.default_queue
    job_id = new_job_id()
    submit(connect(), settings, prepared, queue_name, job_id)
    return Submitted(job_id, queue_name)
