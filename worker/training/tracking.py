"""Weights & Biases logging beside TensorBoard and metrics.jsonl, off unless `logging.wandb: true`.

`wandb` is imported only when it is on (a run without it never loads the package, and so never touches the
network); whether it then syncs online or writes offline runs is wandb's own `WANDB_MODE`. The run lives in
`<output_dir>/wandb/`, named after `logging.wandb_run_name` (default: the output directory's name), and
keeps the validated config.
"""

from __future__ import annotations

from pathlib import Path

from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import TrainConfig


class WandbLog:
    def __init__(self, run):
        self.run = run

    def log(self, record: dict) -> None:
        prefix = "validation/" if record.get("kind") == "validation" else "train/"
        scalars = {
            prefix + key: value
            for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step"
        }
        if scalars:
            self.run.log(scalars, step=int(record["step"]))

    def finish(self) -> None:
        self.run.finish()


def start_wandb(config: TrainConfig, output_dir: Path) -> WandbLog | None:
    """The run's wandb logger, or None when `logging.wandb` is off (then `wandb` is not imported)."""
    logging = config.logging
    if not logging.wandb:
        return None
    try:
        import wandb
    except ImportError:
        raise BadInput(
            "logging.wandb is on but the wandb package is not installed",
            "pip install wandb, or set logging.wandb false",
        ) from None
    output_dir = Path(output_dir)
    run = wandb.init(
        project=logging.wandb_project,
        name=logging.wandb_run_name or output_dir.name,
        dir=str(output_dir),
        config=config.model_dump(mode="json"),
    )
    return WandbLog(run)
