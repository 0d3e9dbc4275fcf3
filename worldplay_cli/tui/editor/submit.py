"""Submit = enqueue one generation job for the edited trajectory, through `worldplay_cli.submit.submit_generation`
(the same path as `generate --queue` and the dashboard)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trajectories import Trajectory
from worldplay_cli.submit import Submitted

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

    The job gets `trajectory` itself; `pose` is how it records where the trajectory came from: the pose
    string when it reproduces the trajectory exactly, or the saved file (None: `UNSAVED_SOURCE`).
    """
    from worldplay_cli.submit import GenerateRequest, prepare, submit_generation

    request = GenerateRequest(
        prompt=form.prompt,
        image=image,
        pose=pose or UNSAVED_SOURCE,
        engine=form.engine,
        variant=form.variant,
        seed=form.seed,
    )
    prepared = prepare(request, settings, trajectory)  # before connecting: bad input starts no Redis
    return submit_generation(prepared, settings, connect(), queue)
