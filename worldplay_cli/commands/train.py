"""`worldplay train`: train a WorldPlay model from a YAML config, in the foreground or as a queue job."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import (
    ConfigOption,
    JsonOption,
    OutputRootOption,
    QueueNameOption,
    QueueOption,
    RedisUrlOption,
    queued,
)

HELP = """Train (fine-tune) a WorldPlay model on a prepared dataset.

[bold]worldplay train CONFIG[/] (a YAML file, or a bundled example by name, e.g. tiny_synthetic) runs in the foreground (Ctrl+C saves a checkpoint, then stops). [bold]--queue[/] puts it on the train queue for `worldplay worker --queue train` ([bold]--queue-name NAME[/] for another) and prints the job id; checkpoints then go to <output root>/<job id>/. [bold]worldplay train resume RUN[/] continues from the newest checkpoint of a run directory, a checkpoint directory or a queued job's id.

Every key of the config can be overridden, e.g. [bold]--set optimizer.learning_rate=1e-5[/]. The config is validated before anything starts or is enqueued. See docs/training.md.

Several hosts: run the same command on each with [bold]--nnodes N --node-rank R --rdzv HOST:PORT[/] (HOST: node 0's address, the same on every node); torchrun's c10d rendezvous joins them into one run, whose output directory must be on a filesystem all nodes share ("Training at scale" in docs/training.md, with a Slurm script).
"""


@dataclass(frozen=True)
class Nodes:
    """Where this launch sits in a multi-node run (one node: the defaults)."""

    count: int = 1
    rank: int = 0
    rendezvous: str | None = None  # HOST:PORT of node 0


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP)(train)


def training_process_command(arguments: list[str], processes: int = 1, nodes: Nodes = Nodes()) -> list[str]:
    """`python -m worker.training ...`, through torchrun when several processes (GPUs) or nodes are asked for.

    Several nodes meet through torchrun's c10d rendezvous at node 0's HOST:PORT; node 0 hosts its store
    (`is_host`), so no node depends on which launch comes first and node 0, whose agent waits for the others
    at exit, outlives them.
    """
    if processes <= 1 and nodes.count == 1:
        return [sys.executable, "-m", "worker.training", *arguments]
    if nodes.count == 1:
        launch = ["--standalone"]
    else:
        launch = [
            f"--nnodes={nodes.count}",
            f"--node-rank={nodes.rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={nodes.rendezvous}",
            "--rdzv-id=worldplay-train",
            f"--rdzv-conf=is_host={str(nodes.rank == 0).lower()}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        f"--nproc-per-node={processes}",
        "-m",
        "worker.training",
        *arguments,
    ]


def check_nodes(nnodes: int, node_rank: int, rendezvous: str | None, on_queue: bool) -> Nodes:
    from worldplay_cli.contract.errors import BadInput

    if nnodes == 1:
        if rendezvous is not None or node_rank:
            raise BadInput("--rdzv and --node-rank are for multi-node runs", "add --nnodes N (N > 1)")
        return Nodes()
    if on_queue:
        raise BadInput(
            "a multi-node run starts in the foreground on every node", "drop --queue (a queue job runs on one worker)"
        )
    if rendezvous is None:
        raise BadInput("--nnodes needs --rdzv HOST:PORT", "node 0's address and a free port, the same on every node")
    host, separator, port = rendezvous.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--rdzv {rendezvous!r} is not HOST:PORT", "e.g. --rdzv node001:29500")
    if not 0 <= node_rank < nnodes:
        raise BadInput(f"--node-rank {node_rank} is not in 0..{nnodes - 1}", "number the nodes 0 to --nnodes - 1")
    return Nodes(nnodes, node_rank, rendezvous)


def run_training_process(arguments: list[str], processes: int = 1, nodes: Nodes = Nodes()) -> dict:
    """Run the worker-side process (its progress goes to stderr), return its summary (errors become CLI errors).

    A Ctrl+C reaches the child too (same process group); it finishes the step, saves and exits, and we
    wait for that instead of leaving it orphaned.
    """
    from worldplay_cli.contract.errors import BadInput, WorldplayError

    command = training_process_command(arguments, processes, nodes)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    last: dict = {}
    while True:
        try:
            for line in process.stdout:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("kind") in ("summary", "error"):
                    last = record
            break
        except KeyboardInterrupt:
            continue
    code = process.wait()
    if last.get("kind") == "error":
        error = BadInput if code == 2 else WorldplayError
        raise error(last["message"], last.get("hint"))
    if code != 0 or last.get("kind") != "summary":
        raise WorldplayError(
            f"the training process failed (exit code {code})", "run with WORLDPLAY_DEBUG=1 or see its output above"
        )
    return {key: value for key, value in last.items() if key != "kind"}


def train(
    target: Annotated[
        list[str],
        typer.Argument(
            metavar="CONFIG | resume RUN",
            help="A config YAML or bundled example name, or `resume` and a run directory, checkpoint or job id.",
        ),
    ],
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: KEY=VALUE (repeatable).")
    ] = None,
    queue: QueueOption = False,
    queue_name: QueueNameOption = None,
    gpus: Annotated[
        int, typer.Option("--gpus", help="Processes, one per GPU (gloo ranks on a CPU-only host).", min=1)
    ] = 1,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Nodes of a multi-node run.", min=1)] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's number, 0..nnodes-1.", min=0)] = 0,
    rendezvous: Annotated[
        Optional[str], typer.Option("--rdzv", metavar="HOST:PORT", help="Node 0's rendezvous address (multi-node).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the resolved config; run nothing.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
) -> None:
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.training import check_paths, load_train_config
    from worldplay_cli.output import emit

    overrides = overrides or []
    on_queue = queued(queue, queue_name)
    nodes = check_nodes(nnodes, node_rank, rendezvous, on_queue)
    if target[0] == "resume":
        if len(target) != 2:
            raise BadInput("resume takes one run directory, checkpoint or job id", "worldplay train resume runs/my-run")
        run = _resolve_run(target[1], config, redis_url, output_root)
        if on_queue:
            raise BadInput(
                "resume runs in the foreground", "a re-run queue job resumes by itself: `worldplay jobs retry JOB`"
            )
        summary = run_training_process(["resume", str(run), *_set_args(overrides)], gpus, nodes)
        emit(summary, as_json, lambda console: _render(console, summary))
        return
    if len(target) != 1:
        raise BadInput(
            f"expected one config file, got {len(target)} arguments", "worldplay train CONFIG [--set KEY=VALUE]"
        )
    train_config = load_train_config(target[0], overrides)
    check_paths(train_config)
    if gpus % train_config.sp_size:
        raise BadInput(
            f"--gpus {gpus} is not a multiple of sp_size {train_config.sp_size}",
            "a sequence-parallel group stays on one node: give each node whole groups",
        )
    if dry_run:
        emit(train_config.model_dump(mode="json"), as_json=True)
        return
    if on_queue:
        emit(*_enqueue(train_config, gpus, queue_name, config, redis_url, output_root, as_json))
        return
    summary = run_training_process(["train", target[0], *_set_args(overrides)], gpus, nodes)
    emit(summary, as_json, lambda console: _render(console, summary))


def _set_args(overrides: list[str]) -> list[str]:
    return [argument for item in overrides for argument in ("--set", item)]


def _resolve_run(reference: str, config, redis_url, output_root) -> Path:
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.specs import job_id_token
    from worldplay_cli.runtime import Runtime

    path = Path(reference)
    if path.exists():
        return path
    root = Path(Runtime(config, redis_url, output_root).settings.output_root)
    # Job directories are named by job id: the same prefixes and random part `worldplay jobs` accepts.
    matches = sorted(
        directory
        for directory in (root.iterdir() if root.is_dir() else ())
        if directory.is_dir() and (directory.name.startswith(reference) or job_id_token(directory.name) == reference)
    )
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BadInput(
            f"{reference!r} matches {len(matches)} job directories: {', '.join(m.name for m in matches[:5])}",
            "type more of the id",
        )
    raise BadInput(
        f"{reference} is neither a run directory nor a job id with a directory under the output root",
        "give a run directory, a checkpoint or the id of a train job (worldplay jobs list)",
    )


def _enqueue(train_config, gpus: int, queue_name: str | None, config, redis_url, output_root, as_json: bool):
    from worldplay_cli.contract.queue import enqueue
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.contract.training import DEFAULT_TRAIN_QUEUE, TrainJobSpec
    from worldplay_cli.jobs import unserved_queue_warning
    from worldplay_cli.output import warn
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.submit import check_output_root

    runtime = Runtime(config, redis_url, output_root)
    check_output_root(runtime.settings)
    job_id = new_job_id()
    job_dir = Path(runtime.settings.output_root) / job_id
    checkpoint = train_config.checkpoint.model_copy(update={"output_dir": str(job_dir)})
    spec = TrainJobSpec(config=train_config.model_copy(update={"checkpoint": checkpoint}), gpus=gpus)
    name = queue_name or DEFAULT_TRAIN_QUEUE
    enqueue(runtime.conn, runtime.settings, spec, job_id, name)
    warning = unserved_queue_warning(runtime.conn, runtime.settings, name)
    warn(warning)
    data = {"job_id": job_id, "queue": name, "status": "queued", "output_dir": str(job_dir), "warning": warning}
    return data, as_json, lambda console: console.print(job_id)


def _render(console, summary: dict) -> None:
    state = "stopped" if summary.get("stopped") else "finished"
    loss = summary.get("loss")
    console.print(
        f"{state} at step {summary['step']}/{summary['max_steps']}" + (f", loss {loss:.4f}" if loss is not None else "")
    )
    if summary.get("checkpoint"):
        console.print(f"checkpoint: {summary['checkpoint']}")
