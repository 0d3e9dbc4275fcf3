"""An eval job: `worldplay eval` of another job's video, run by a worker (`worker.tasks.eval`), usually
enqueued to depend on the job it evaluates (generate -> eval). Its `eval.json` goes into its own job
directory; the metrics are `trajectories.evaluation` (docs/eval.md)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from worldplay_cli.contract.specs import TASK_EVAL

EVAL_SCHEMA_VERSION = 1
EVAL_TIMEOUT_S = 3600


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = EVAL_SCHEMA_VERSION
    kind: Literal["eval"] = "eval"
    target: str = Field(pattern=r"^[\w\-]+$", max_length=200)  # the job whose video.mp4 and trajectory.json
    chunk_latents: int = Field(default=4, ge=1, le=64)
    stride: int = Field(default=8, ge=1, le=256)
    timeout_s: int = Field(default=EVAL_TIMEOUT_S, gt=0)

    task: ClassVar[str] = TASK_EVAL
    rerun_first: ClassVar[bool] = False

    def summary(self, queue: str) -> dict:
        return {"kind": self.kind, "engine": "eval", "prompt": f"eval of {self.target}", "queue": queue}

    def description(self) -> str:
        return f"eval {self.target}"
