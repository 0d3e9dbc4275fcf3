"""A job's `job.meta`: the one vocabulary of the fields the queue, the worker and the listings share.

rq keeps `job.meta` as a dict in the job hash. `JobMeta` names its fields and types them with the
contract's `Progress` and `Failure`; its static methods are the only writes the queue
(`contract.queue`), the runner, the reporter and the training job make, and `JobMeta.read` is how
`worldplay_cli.rows.JobRow` reads it back.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worldplay_cli.contract.specs import Failure, FailureKind, Progress


class Attempt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    """One ended attempt of a job, in `JobMeta.history`."""

    attempt: int
    outcome: FailureKind
    message: str
    at: float = Field(default_factory=time.time)


class JobMeta(BaseModel):
    """What a job's rq `job.meta` holds, the one vocabulary of its writers (the queue at enqueue and when
    it reaps a lost run, the runner and the training job at the start and end of an attempt, the
    reporter's progress) and of its reader (`worldplay_cli.rows.JobRow`).

    Writers change `job.meta` (a dict rq saves) through the methods below, one field at a time, so a key
    another writer owns (`train`, written by the training job) is never rewritten by accident. `read` is
    lenient: a field that does not validate reads as unset, so one odd job never breaks a listing."""

    model_config = ConfigDict(extra="allow")

    summary: dict[str, Any] = Field(default_factory=dict)  # `JobSpec.summary`/`TrainJobSpec.summary`
    attempt: int = 0  # the attempt running or last run; 0 while it never started
    progress: Progress | None = None
    failure: Failure | None = None
    history: list[Attempt] = Field(default_factory=list)  # every ended attempt that did not finish
    output_dir: str | None = None
    video: str | None = None  # the committed video, once the job finished
    train: dict[str, Any] | None = None  # a train job's step, loss history, validation and checkpoint
    play: dict[str, Any] | None = None  # a live session's chunks, frames, last latency (`contract.play`)

    @classmethod
    def read(cls, meta: dict | None) -> JobMeta:
        meta = meta if isinstance(meta, dict) else {}
        try:
            return cls.model_validate(meta)
        except ValueError:
            pass
        fields = {}
        for name, value in meta.items():
            try:
                cls.model_validate({name: value})
            except ValueError:
                continue
            fields[name] = value
        return cls.model_validate(fields)

    @staticmethod
    def queued(summary: dict[str, Any]) -> dict:
        """The meta a job is enqueued with."""
        return {"summary": summary, "attempt": 0}

    @staticmethod
    def start_attempt(meta: dict, output_dir: str, progress: Progress | None = None) -> int:
        """Count a new attempt (returned), forget the last one's failure; `progress` as it starts."""
        attempt = int(meta.get("attempt") or 0) + 1
        meta.update(attempt=attempt, output_dir=output_dir)
        if progress is not None:
            meta["progress"] = progress.model_dump()
        meta.pop("failure", None)
        return attempt

    @staticmethod
    def set_progress(meta: dict, progress: Progress) -> None:
        meta["progress"] = progress.model_dump()

    @staticmethod
    def set_failure(meta: dict, failure: Failure) -> None:
        meta["failure"] = failure.model_dump()

    @staticmethod
    def note_attempt(meta: dict, failure: Failure) -> None:
        """Add the attempt that just ended, with how it ended, to the history."""
        entry = Attempt(attempt=int(meta.get("attempt") or 0), outcome=failure.kind, message=failure.message)
        meta.setdefault("history", []).append(entry.model_dump())

    @staticmethod
    def set_play(meta: dict, figures: dict[str, Any]) -> None:
        """A live session's figures as it plays: `chunks`, `frames`, `latency_s`, `generate_s`, `prompt`."""
        meta["play"] = figures

    @staticmethod
    def set_video(meta: dict, video: str) -> None:
        meta["video"] = video

    @staticmethod
    def clear_outcome(meta: dict) -> None:
        """Forget the last attempt's failure and progress (a job put back on its queue by the user)."""
        meta.pop("failure", None)
        meta.pop("progress", None)


def describe_progress(progress: Progress | dict | None) -> str:
    """A job's progress in one line, the same wherever it is shown: `denoise 26/50 · chunk 2/4` (the stage,
    its step of the total, the chunk of the video); empty before the first stage. Percent, ETA and bars
    are the caller's (a listing cell, a progress bar)."""
    if isinstance(progress, Progress):
        progress = progress.model_dump()
    progress = progress or {}
    if not progress.get("stage"):
        return ""
    text = str(progress["stage"])
    if progress.get("step") is not None and progress.get("total"):
        text += f" {progress['step']}/{progress['total']}"
    if progress.get("chunk") is not None and progress.get("num_chunks"):
        text += f" · chunk {progress['chunk']}/{progress['num_chunks']}"
    return text
