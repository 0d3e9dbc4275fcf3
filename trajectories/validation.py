"""Model validity of a trajectory length, with the nearest fixes (pad with a hold, or trim)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trajectories.errors import TrajectoryError
from trajectories.latents import chunk_size, latents_to_frames, nearest_valid_latents


@dataclass(frozen=True)
class Suggestion:
    how: str  # "pad" (repeat the last pose: a hold) or "trim" (drop trailing latents)
    num_latents: int
    num_frames: int
    description: str


@dataclass(frozen=True)
class ValidationReport:
    model: str
    num_latents: int
    num_frames: int
    problems: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = list(self.problems)
        data["suggestions"] = [asdict(suggestion) for suggestion in self.suggestions]
        return data


def validate_length(model: str, num_latents: int, frames: int | None = None) -> ValidationReport:
    """Check `num_latents` against `model` (and against a requested pixel frame count, if any)."""
    chunk = chunk_size(model)
    problems = []
    num_frames = latents_to_frames(num_latents)
    if frames is not None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise TrajectoryError(
                f"frame count must be a positive whole number, got {frames!r}", "frames are 4k+1, e.g. 125"
            )
        if (frames - 1) % 4:
            problems.append(f"{frames} frames is not 4k+1 (1 frame for the first latent, 4 for each other)")
        elif frames != num_frames:
            problems.append(
                f"trajectory has {num_latents} latents ({num_frames} frames) "
                f"but {frames} frames need {(frames - 1) // 4 + 1} latents"
            )
    if num_latents % chunk or num_latents < chunk:
        problems.append(f"{model} needs a multiple of {chunk} latents, trajectory has {num_latents}")
    suggestions = []
    if problems:
        below, above = nearest_valid_latents(model, num_latents)
        if above != num_latents:
            suggestions.append(
                Suggestion(
                    "pad", above, latents_to_frames(above), f"hold the last pose for {above - num_latents} more latents"
                )
            )
        if below is not None and below != num_latents:
            suggestions.append(
                Suggestion("trim", below, latents_to_frames(below), f"drop the last {num_latents - below} latents")
            )
    return ValidationReport(model, num_latents, num_frames, tuple(problems), tuple(suggestions))
