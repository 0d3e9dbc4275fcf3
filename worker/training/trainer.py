"""The one training loop: methods plug in as strategies, everything else (devices, FSDP2, LoRA, EMA, mixed
precision, clipping, LR schedule, checkpoints, resume, validation, metrics) is shared.

Per step: `grad_accumulation` micro-batches (loss / accumulation, backward), grad-norm clip (optionally
skipping steps above a norm), optimizer and LR-schedule step, EMA update, metrics, then checkpoint and
validation when due. Distributed runs (torchrun: WORLD_SIZE > 1) use gloo on CPU and NCCL on GPUs and
form a dp x sp device mesh. Each of the dp groups draws its own micro-batches of the global batch; the
`sp_size` ranks of a group see the same sample and split its image tokens (Ulysses sequence parallelism:
every network is given a `UlyssesAttention` over the group, the processor inference uses). `fsdp: true`
shards every double block and the root with FSDP2 `fully_shard` over all dp x sp ranks, which averages the
sharded gradients itself; the gradients of replicated trainable parameters (the whole model without FSDP,
the LoRA adapters with or without it) are averaged over all ranks explicitly. Averaging over the sp ranks
too is exact (worker/parallel/comm.py: their gradients average to one process's), so dp groups take the
step one process accumulating the same dp micro-batches takes, whatever sp is.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from worker.training.batches import Batch
from worker.training.checkpoints import STATE_NAME, TRANSFORMER_SUBDIR, WEIGHTS_NAME, read_metadata, write_checkpoint
from worker.training.self_forcing import Networks, iteration_draws
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import (
    ContextForcingMethod,
    SelfForcingMethod,
    StreamingLongTuningMethod,
    TrainConfig,
)

METRICS_NAME = "metrics.jsonl"
ROOT_FORWARD_METHODS = ("forward_text", "forward_bi", "forward_context", "forward_chunk", "forward_chunk_causal")


@dataclass
class Hooks:
    """How the outside world follows and stops a run: `on_metrics` gets every logged record, `should_stop`
    is polled after each step (a stop saves a checkpoint first)."""

    on_metrics: Callable[[dict], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class RunSummary:
    step: int
    max_steps: int
    loss: float | None
    checkpoint: str | None
    stopped: bool
    output_dir: str
    validation: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Devices and distribution


@dataclass(frozen=True)
class DistributedContext:
    """This rank's place: `rank` of `world_size`, in the dp x sp `mesh` (None in one process); ranks
    dp_rank * sp_size .. + sp_size - 1 form a sequence-parallel group (neighbours: one node's GPUs)."""

    rank: int
    world_size: int
    device: torch.device
    sp_size: int = 1
    mesh: object = None  # torch.distributed.device_mesh.DeviceMesh, dims ("dp", "sp")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def sp_group(self) -> dist.ProcessGroup:
        return self.mesh.get_group("sp")

    def all_mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def any(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def average_gradients(self, parameters: list[nn.Parameter], bucket_elements: int = 1 << 24) -> None:
        """Replace the gradients of replicated parameters by their mean over the ranks (what DDP does; DDP
        itself only hooks `forward`, and the methods drive the model through other entry points).

        A parameter some rank's samples did not reach counts as a zero gradient there; one no rank's samples
        reached keeps no gradient, so the optimizer skips it as one process would. The reduction goes in
        buckets so a large replica needs no second full-size buffer.
        """
        if self.world_size == 1 or not parameters:
            return
        reached = torch.tensor(
            [parameter.grad is not None for parameter in parameters], dtype=torch.float32, device=self.device
        )
        dist.all_reduce(reached, op=dist.ReduceOp.MAX)
        gradients = []
        for parameter, flag in zip(parameters, reached.tolist()):
            if flag:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                gradients.append(parameter.grad)
        buckets: list[list[torch.Tensor]] = []
        size = 0
        for gradient in gradients:
            if not buckets or size + gradient.numel() > bucket_elements or buckets[-1][0].dtype != gradient.dtype:
                buckets.append([])
                size = 0
            buckets[-1].append(gradient)
            size += gradient.numel()
        for bucket in buckets:
            flat = torch.cat([gradient.reshape(-1) for gradient in bucket])
            dist.all_reduce(flat)
            flat /= self.world_size
            for gradient, part in zip(bucket, flat.split([gradient.numel() for gradient in bucket])):
                gradient.copy_(part.view_as(gradient))


def distributed_context(sp_size: int = 1) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size % sp_size:
        raise BadInput(
            f"sp_size {sp_size} does not divide the {world_size} process(es) of this run",
            "start a multiple of sp_size processes (--gpus), or lower sp_size",
        )
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return DistributedContext(0, 1, device)
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    mesh = init_device_mesh(device.type, (world_size // sp_size, sp_size), mesh_dim_names=("dp", "sp"))
    return DistributedContext(dist.get_rank(), world_size, device, sp_size, mesh)


def check_shared_directory(context: DistributedContext, directory: Path) -> None:
    """Every rank must see the run directory rank 0 writes (its checkpoints are what a resume reads, on
    whatever nodes it runs): rank 0 writes a nonce there, every rank reads it back after a barrier."""
    if context.world_size == 1:
        return
    nonce = [secrets.token_hex(8) if context.is_main else None]
    dist.broadcast_object_list(nonce)
    marker = directory / f".shared-check-{nonce[0]}"
    if context.is_main:
        marker.write_text(nonce[0])
    context.barrier()
    try:
        seen = marker.read_text() == nonce[0]
    except OSError:
        seen = False
    views: list = [None] * context.world_size
    dist.all_gather_object(views, (socket.gethostname(), context.rank, seen))
    if context.is_main:
        marker.unlink()
    blind = [f"rank {rank} on {host}" for host, rank, seen in views if not seen]
    if blind:
        raise BadInput(
            f"{directory}, written by rank 0 on {views[0][0]}, is not visible to {', '.join(blind)}",
            "the output directory must be on a filesystem all nodes share",
        )


# ---------------------------------------------------------------------------------------------------
# Model


def load_initial_model(config: TrainConfig, device: torch.device, init: str | None = None) -> nn.Module:
    """The transformer with the configured initial weights (`model.init`, or `init`: a teacher's or a
    critic's) in fp32 (the master weights)."""
    from worker.models.checkpoint import (
        ACTION_CHECKPOINT_DIRS,
        CheckpointError,
        action_checkpoint_path,
        load_transformer,
    )

    model_dir = Path(config.model.model_dir)
    init = init or config.model.init
    if init in ACTION_CHECKPOINT_DIRS:
        source, strict = action_checkpoint_path(model_dir, init), True
    elif init == "base":
        # the base HunyuanVideo-1.5 weights: action parameters start at zero, as add_action_parameters leaves them
        source, strict = None, False
    else:
        source, strict = Path(init), True
    try:
        model = load_transformer(
            model_dir,
            source,
            dtype=torch.float32,
            device=device,
            strict=strict,
            attention_backend=config.model.attention_backend,
        )
    except CheckpointError as error:
        raise BadInput(str(error).split(" (hint:")[0], error.hint or None) from None
    return model.train()


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    return schedule_factor(config.optimizer.schedule, config.optimizer.warmup_steps, config.max_steps)


def schedule_factor(schedule: str, warmup_steps: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class EMA:
    """Shadow copies of the trainable parameters, updated after every optimizer step from `start_step` on."""

    def __init__(self, parameters: list[nn.Parameter], decay: float, start_step: int):
        self.parameters = parameters
        self.decay = decay
        self.start_step = start_step
        self.shadow = [parameter.detach().clone() for parameter in parameters]

    @torch.no_grad()
    def update(self, step: int) -> None:
        if step < self.start_step:
            for shadow, parameter in zip(self.shadow, self.parameters):
                shadow.copy_(parameter)
            return
        for shadow, parameter in zip(self.shadow, self.parameters):
            shadow.lerp_(parameter.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self):
        """The EMA weights live in the model for the duration (validation, export)."""
        with torch.no_grad():
            for shadow, parameter in zip(self.shadow, self.parameters):
                saved = parameter.detach().clone()
                parameter.copy_(shadow)
                shadow.copy_(saved)
        try:
            yield
        finally:
            with torch.no_grad():
                for shadow, parameter in zip(self.shadow, self.parameters):
                    saved = parameter.detach().clone()
                    parameter.copy_(shadow)
                    shadow.copy_(saved)

    def state_dict(self) -> list[torch.Tensor]:
        return [full_tensor(shadow).cpu() for shadow in self.shadow]

    def load_state_dict(self, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for shadow, tensor in zip(self.shadow, tensors):
                shadow.copy_(local_part(tensor, shadow))


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP-sharded) parameter; a collective for DTensors."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full` laid out like the (possibly sharded) `like`."""
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)
    return full.to(like.device)


class MetricsLog:
    """metrics.jsonl (one JSON object per line) plus TensorBoard scalars when the package is importable."""

    def __init__(self, output_dir: Path, tensorboard: str, wandb=None):
        self.path = output_dir / METRICS_NAME
        self.wandb = wandb  # worker.training.tracking.WandbLog when logging.wandb is on
        self.writer = None
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard == "on":
                    raise BadInput(
                        "logging.tensorboard is on but the tensorboard package is not installed",
                        "pip install tensorboard",
                    ) from None
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        import json

        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = "validation/" if record.get("kind") == "validation" else "train/"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(prefix + key, value, record["step"])
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(record)


# ---------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    def __init__(self, config: TrainConfig, resume_from: Path | None = None, hooks: Hooks | None = None):
        from worker.training.batches import SampleBuilder
        from worker.training.dataset import PreparedDataset
        from worker.training.methods import build_method

        self.config = config
        self.hooks = hooks or Hooks()
        self.context = distributed_context(config.sp_size)
        self.output_dir = Path(config.checkpoint.output_dir)
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        check_shared_directory(self.context, self.output_dir)
        torch.manual_seed(config.seed)

        # 1. data and method; a distillation method drives its own networks (teacher, critic) beside the model
        self.dataset = PreparedDataset(config.data.path)
        self.distillation = isinstance(config.method, SelfForcingMethod)
        if isinstance(config.method, StreamingLongTuningMethod):
            from worker.models.vae import load_vae
            from worker.training.streaming import StreamingLongTuning

            vae = load_vae(Path(config.model.model_dir) / "vae", device=self.context.device)
            self.method = StreamingLongTuning(config.method, self.dataset.negative_prompt(), config.seed, vae)
        elif isinstance(config.method, ContextForcingMethod):
            from worker.training.context_forcing import ContextForcing

            self.method = ContextForcing(config.method, self.dataset.negative_prompt(), config.seed)
        elif self.distillation:
            from worker.training.self_forcing import SelfForcing

            self.method = SelfForcing(config.method, self.dataset.negative_prompt(), config.seed)
        else:
            self.method = build_method(config.method)
        self.samples = SampleBuilder(
            self.dataset, config.method, config.seed, config.data.cfg_dropout, data=config.data
        )
        if not self.samples.clips and not self.samples.sources.streamed:
            raise BadInput(
                f"no training clip of {config.data.path} has the {config.method.window_latents} latents a sample needs",
                "lower method.window_latents or prepare longer clips",
            )

        # 2. model, LoRA, resume weights, FSDP
        device = self.context.device
        self.model = load_initial_model(config, device)
        self.model.gradient_checkpointing = config.gradient_checkpointing
        self.lora = None
        if config.lora is not None:
            from worker.training.lora import LoRA

            self.model.requires_grad_(False)
            self.lora = LoRA(self.model, config.lora).to(device)
            self.trainable: nn.Module = self.lora
        else:
            self.model.requires_grad_(True)
            self.trainable = self.model
        self.teacher = self.critic = None
        if self.distillation:
            self.teacher = load_initial_model(config, device, config.method.teacher.init).requires_grad_(False)
            self.critic = load_initial_model(config, device, config.method.critic_init).requires_grad_(True)
            self.critic.gradient_checkpointing = config.gradient_checkpointing
        if config.sp_size > 1:
            for model in (self.model, self.teacher, self.critic):
                if model is not None:
                    self._sequence_parallel(model)
        self.start_step = 0
        state = None
        if resume_from is not None:
            state = self._load_resume_weights(resume_from)
        # one rank has nothing to shard with (a run resumed on one node from a sharded run's checkpoint)
        if config.fsdp and self.context.world_size > 1:
            for model in (self.model, self.teacher, self.critic):
                if model is not None:
                    self._shard(model)

        # 3. optimizer, schedule, EMA
        self.parameters = [parameter for parameter in self.trainable.parameters() if parameter.requires_grad]
        # FSDP-managed parameters are DTensors whose gradients FSDP reduces; every other one is a replica
        self.replicated = [parameter for parameter in self.parameters if not hasattr(parameter, "device_mesh")]
        optimizer = config.optimizer
        self.optimizer = torch.optim.AdamW(
            self.parameters,
            lr=optimizer.learning_rate,
            betas=optimizer.betas,
            weight_decay=optimizer.weight_decay,
            eps=optimizer.eps,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.ema = EMA(self.parameters, config.ema.decay, config.ema.start_step) if config.ema else None
        self.critic_parameters: list[nn.Parameter] = []
        if self.distillation:
            critic = config.method.critic
            self.critic_parameters = list(self.critic.parameters())
            self.replicated += [
                parameter for parameter in self.critic_parameters if not hasattr(parameter, "device_mesh")
            ]
            self.critic_optimizer = torch.optim.AdamW(
                self.critic_parameters,
                lr=critic.learning_rate,
                betas=critic.betas,
                weight_decay=critic.weight_decay,
                eps=optimizer.eps,
            )
            self.critic_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.critic_optimizer, schedule_factor(critic.schedule, 0, config.max_steps)
            )
            self.last_generator_loss: float | None = None
        if state is not None:
            self._load_resume_state(state)
        self.metrics = None
        if self.context.is_main:
            from worker.training.tracking import start_wandb

            self.metrics = MetricsLog(self.output_dir, config.logging.tensorboard, start_wandb(config, self.output_dir))
        self.validator = None
        if config.validation is not None:
            from worker.training.validation import Validator

            self.validator = Validator(config, self.dataset, self.output_dir, device, self.context.is_main)

    # -- setup helpers ------------------------------------------------------------------------------

    def _sequence_parallel(self, model: nn.Module) -> None:
        from worker.parallel.ulysses import SequenceParallelError, UlyssesAttention

        processor = UlyssesAttention(self.context.sp_group, model.attention_processor.backend)
        try:
            model.set_attention_processor(processor)
        except SequenceParallelError as error:
            raise BadInput(f"sp_size {self.config.sp_size}: {error}", "set sp_size to one of those") from None

    def _shard(self, model: nn.Module) -> None:
        """FSDP2 over all ranks, dp x sp: the gradient reduction a sequence-parallel step needs is a mean over
        every rank anyway (FSDP's reduce-scatter does it in one collective) and the parameters, gradients and
        optimizer states divide by the whole world rather than by dp. The model is driven through methods other than `forward` (forward_text,
        the blocks' qkv/finish halves, which call the blocks' layers from the root), so the units are the
        layers of every double block (each reached through its own `forward`) plus the root, whose
        driving methods are registered as forward methods."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(self.context.device.type, (self.context.world_size,))
        for block in model.double_blocks:
            for layer in block.children():
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for method in ROOT_FORWARD_METHODS:
            register_fsdp_forward_method(model, method)

    def _load_resume_weights(self, checkpoint: Path) -> dict:
        from worker.models.checkpoint import load_weights

        metadata = read_metadata(checkpoint)
        self.start_step = int(metadata["step"])
        state = torch.load(checkpoint / STATE_NAME, map_location="cpu", weights_only=True)
        if self.lora is not None:
            self.lora.load_state_dict(state["lora"])
        else:
            load_weights(
                self.model,
                checkpoint / TRANSFORMER_SUBDIR / WEIGHTS_NAME,
                torch.float32,
                self.context.device,
                strict=True,
            )
            self.model.requires_grad_(True)
        return state

    def _load_resume_state(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # parameters that never receive a gradient (e.g. the last block's text queries under the AR method)
        # have no optimizer state, hence strict=False
        set_optimizer_state_dict(
            self.trainable,
            self.optimizer,
            state["optimizer"],
            options=StateDictOptions(full_state_dict=True, strict=False),
        )
        self.scheduler.load_state_dict(state["scheduler"])
        self.samples.load_state_dict(state.get("data"))
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.distillation:
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            critic = state["critic"]
            set_model_state_dict(self.critic, critic["weights"], options=StateDictOptions(full_state_dict=True))
            set_optimizer_state_dict(
                self.critic,
                self.critic_optimizer,
                critic["optimizer"],
                options=StateDictOptions(full_state_dict=True, strict=False),
            )
            self.critic_scheduler.load_state_dict(critic["scheduler"])
            self.last_generator_loss = critic["last_generator_loss"]
            groups = state["method"]
            if len(groups) != self.context.dp_size:
                raise BadInput(
                    f"the checkpoint holds the streaming state of {len(groups)} data-parallel group(s), this run "
                    f"has {self.context.dp_size}",
                    "resume with as many processes / sp_size as the run that wrote it",
                )
            self.method.load_state_dict(groups[self.context.dp_rank])

    # -- the loop -----------------------------------------------------------------------------------

    def autocast(self):
        enabled = self.config.mixed_precision == "bf16"
        return torch.autocast(self.context.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, step: int) -> dict:
        """One optimizer step (all micro-batches); returns its metrics (loss averaged over ranks)."""
        if self.distillation:
            return self.distillation_step(step)
        config = self.config
        accumulation = config.grad_accumulation
        total_loss = 0.0
        memory_samples = 0
        for micro in range(accumulation):
            batch = self.samples.batch(
                step, micro, accumulation, self.context.dp_rank, self.context.dp_size, config.data.batch_size
            )
            batch = batch.to(self.context.device)
            with self.autocast():
                loss = self.method.loss(self.model, batch)
            (loss / accumulation).backward()
            total_loss += loss.item() / accumulation
            memory_samples += int(batch.memory.sum())
        self.context.average_gradients(self.replicated)
        max_norm = config.optimizer.max_grad_norm or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
        threshold = config.optimizer.skip_grad_norm_above
        skipped = threshold is not None and not grad_norm < threshold
        if not skipped:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(step)
        return {
            "loss": self.context.all_mean(total_loss),
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": skipped,
            "memory_samples": memory_samples,
        }

    def distillation_step(self, step: int) -> dict:
        """One distillation iteration: the critic steps every time, the student every
        `generator_update_interval` iterations, each with its own optimizer, LR schedule and clipping; both
        losses come from one student rollout per micro-batch. Both LR schedules advance every iteration."""
        config = self.config
        accumulation = config.grad_accumulation
        update_student = self.method.updates_student(step)
        # the ranks of a sequence-parallel group draw the same sample
        world, rank = self.context.dp_size, self.context.dp_rank
        critic_total, generator_total = 0.0, 0.0
        networks = Networks(self.model, self.teacher, self.critic)
        for micro in range(accumulation):

            def draw(at_step: int, micro: int = micro) -> Batch:
                batch = self.samples.batch(at_step, micro, accumulation, rank, world, config.data.batch_size)
                return batch.to(self.context.device)

            global_index = (step * accumulation + micro) * world + rank
            draws = iteration_draws(config.seed, step, global_index)
            with self.autocast():
                losses = self.method.losses(networks, draw, step, micro, draws, update_student)
            # the generator loss reaches only the student (scores are taken without gradients) and the critic
            # loss only the critic (its sample is detached), so one backward serves both
            total = losses.critic if losses.generator is None else losses.critic + losses.generator
            (total / accumulation).backward()
            critic_total += losses.critic.item() / accumulation
            if losses.generator is not None:
                generator_total += losses.generator.item() / accumulation
        self.context.average_gradients(self.replicated)
        critic_norm = config.method.critic.max_grad_norm or float("inf")
        critic_grad_norm = float(torch.nn.utils.clip_grad_norm_(self.critic_parameters, critic_norm))
        self.critic_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.critic_scheduler.step()
        grad_norm, skipped = None, not update_student
        if update_student:
            max_norm = config.optimizer.max_grad_norm or float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
            threshold = config.optimizer.skip_grad_norm_above
            skipped = threshold is not None and not grad_norm < threshold
            if not skipped:
                self.optimizer.step()
            self.last_generator_loss = self.context.all_mean(generator_total)
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # the schedule follows the iteration: a first step with no student update (a critic-only iteration
            # after a resume, a skipped update) is meant, not the misordering PyTorch warns of
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning)
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(step)
        critic_loss = self.context.all_mean(critic_total)
        return {
            "loss": critic_loss,
            "critic_loss": critic_loss,
            "generator_loss": self.last_generator_loss,
            "update_student": update_student,
            "grad_norm": grad_norm,
            "critic_grad_norm": critic_grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "critic_lr": self.critic_scheduler.get_last_lr()[0],
            "skipped": skipped,
            "memory_samples": 0,
        }

    def run(self) -> RunSummary:
        config = self.config
        step = self.start_step
        last_loss = None
        last_checkpoint = None
        samples_per_step = config.grad_accumulation * config.data.batch_size * self.context.dp_size
        started = time.monotonic()
        step_times: list[float] = []
        validation: dict = {}
        stopped = False
        if self.validator is not None and config.validation.run_at_start and step == 0:
            validation = self.validate(step)
        while step < config.max_steps:
            tick = time.monotonic()
            metrics = self.train_step(step)
            step += 1
            last_loss = metrics["loss"]
            step_times.append(time.monotonic() - tick)
            recent = step_times[-20:]
            seconds_per_step = sum(recent) / len(recent)
            record = {
                "kind": "train",
                "step": step,
                "max_steps": config.max_steps,
                **metrics,
                "samples_per_s": samples_per_step / seconds_per_step,
                "elapsed_s": time.monotonic() - started,
                "eta_s": seconds_per_step * (config.max_steps - step),
            }
            if step % config.logging.every_steps == 0 or step == config.max_steps or step == self.start_step + 1:
                self._emit(record)
            stop = self.context.any(bool(self.hooks.should_stop and self.hooks.should_stop()))
            if step % config.checkpoint.every_steps == 0 or step == config.max_steps or stop:
                last_checkpoint = self.save(step, last_loss)
            if self.validator is not None and (step % config.validation.every_steps == 0 or step == config.max_steps):
                validation = self.validate(step)
            if stop:
                stopped = True
                break
        return RunSummary(
            step=step,
            max_steps=config.max_steps,
            loss=last_loss,
            checkpoint=str(last_checkpoint) if last_checkpoint else None,
            stopped=stopped,
            output_dir=str(self.output_dir),
            validation=validation,
        )

    def _emit(self, record: dict) -> None:
        if not self.context.is_main:
            return
        self.metrics.write(record)
        if self.hooks.on_metrics is not None:
            self.hooks.on_metrics(record)

    # -- export, checkpoints, validation ------------------------------------------------------------

    def export_weights(self) -> dict[str, torch.Tensor]:
        """The full transformer state dict in official names (LoRA merged) on rank 0's CPU; other ranks of
        a distributed run get an empty dict (the gathered copy only goes where it is written)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        weights = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state.items()}
        if self.lora is not None and weights:
            weights = self.lora.merge_into(weights)
        return weights

    def save(self, step: int, loss: float | None) -> Path:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        weights = self.export_weights()
        ema_weights = None
        if self.ema is not None:
            with self.ema.swapped_in():
                ema_weights = self.export_weights()
        optimizer_state = get_optimizer_state_dict(
            self.trainable, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        ema_state = self.ema.state_dict() if self.ema is not None else None
        critic_state = self.critic_state() if self.distillation else None
        method_state = self.method_states() if self.distillation else None
        path = self.output_dir / f"checkpoint-{step}"
        if self.context.is_main:
            state = {
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "ema": ema_state,
                "lora": self.lora.state_dict() if self.lora is not None else None,
                "critic": critic_state,
                "method": method_state,
                # where streamed datasets stand (rank 0's cursor, taken before the step's draws)
                "data": self.samples.state_dict(),
            }
            metadata = {
                "loss": loss,
                "config": self.config.model_dump(mode="json"),
                "world_size": self.context.world_size,
            }
            write_checkpoint(
                self.output_dir,
                step,
                weights,
                self.model.config.to_official_dict(),
                state,
                metadata,
                ema_weights,
                self.config.checkpoint.keep_last,
            )
            if self.distillation:
                from worker.training.export import write_distilled_layout

                write_distilled_layout(path)
            self._emit({"kind": "checkpoint", "step": step, "path": str(path)})
        self.context.barrier()
        return path

    def method_states(self) -> list[dict]:
        """The method's state between iterations (a streaming sequence), of every data-parallel group in
        order (the ranks of a sequence-parallel group hold the same)."""
        state = self.method.state_dict()
        if self.context.world_size == 1:
            return [state]
        gathered: list = [None] * self.context.world_size
        dist.all_gather_object(gathered, state)
        return gathered[:: self.context.sp_size]

    def critic_state(self) -> dict:
        """The critic's full weights, optimizer and schedule (the teacher is frozen: its init reloads it)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {
            "weights": get_model_state_dict(self.critic, options=options),
            "optimizer": get_optimizer_state_dict(self.critic, self.critic_optimizer, options=options),
            "scheduler": self.critic_scheduler.state_dict(),
            "last_generator_loss": self.last_generator_loss,
        }

    def validate(self, step: int) -> dict:
        context = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with context, torch.no_grad(), self.autocast():
            results = self.validator.run(self.model, step, self.teacher)
        if results:
            self._emit({"kind": "validation", "step": step, **results})
        return results
