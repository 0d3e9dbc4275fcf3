"""The options several commands share, as `Annotated` aliases: a command declares `as_json: JsonOption = False`
and gets the same flag, help and checks as every other command.

Same names as the settings and the job spec they feed: `--variant` is `variant` everywhere (`--model` of the
`traj` commands is a hidden, deprecated alias: `VariantAliasOption` and `variant_from`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from worldplay_cli.rewrite import Policy


def check_redis_url_option(url: Optional[str]) -> Optional[str]:
    """A `--redis-url` with a scheme worldplay cannot use is bad input, refused before anything runs."""
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.settings import REDIS_URL_HINT, mask_url, redis_url_problem

    problem = url is not None and redis_url_problem(url)
    if problem:
        raise BadInput(f"--redis-url {mask_url(url)!r}: {problem}", REDIS_URL_HINT)
    return url


def check_queue_name_option(name: Optional[str]) -> Optional[str]:
    """A `--queue-name` that is not a queue name is bad input, refused before anything runs."""
    from worldplay_cli.contract.settings import check_queue_name

    return name if name is None else check_queue_name(name, "--queue-name")


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="Config file (default ~/.config/worldplay/config.toml).", show_default=False),
]
RedisUrlOption = Annotated[
    Optional[str],
    typer.Option(
        "--redis-url",
        help="redis://, rediss:// or unix:// URL (default: the embedded server).",
        show_default=False,
        callback=check_redis_url_option,
    ),
]
OutputRootOption = Annotated[
    Optional[Path], typer.Option("--output-root", help="Where job directories are written.", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
ModelDirOption = Annotated[
    Optional[Path], typer.Option("--model-dir", help="Layout root (default: the model_dir setting)")
]

# Where a job runs: here (the default), or on a queue. Each command's help names its default queue
# (`generate`: the settings' queue.default_queue; `train`: train; `play`: play). `--queue-name` implies
# `--queue`: see `queued`.
QueueOption = Annotated[
    bool, typer.Option("--queue", help="Submit to a queue (the default one: see above) instead of running here.")
]
QueueNameOption = Annotated[
    Optional[str],
    typer.Option(
        "--queue-name",
        metavar="NAME",
        help="Submit to this queue (implies --queue).",
        show_default=False,
        callback=check_queue_name_option,
    ),
]

# The AR rollout's attention sink + local window (`generate`, `play`; the JobSpec/PlaySpec fields of these names,
# checked by `contract.specs.attention_window_problem`): bounded memory at any length.
SinkLatentsOption = Annotated[
    Optional[int],
    typer.Option(
        help="AR variants, native engine: latents every chunk keeps attending to, never evicted (whole chunks; "
        "with --local-window-latents).",
        show_default=False,
    ),
]
LocalWindowLatentsOption = Annotated[
    Optional[int],
    typer.Option(
        help="The window each chunk attends to, sink included, in latents (whole chunks, above --sink-latents); "
        "replaces the reconstituted memory.",
        show_default=False,
    ),
]

# Prompt rewriting before submission; the spec records the policy ("best-effort" or "required").
RewriteOption = Annotated[
    bool, typer.Option("--rewrite", help="Rewrite the prompt first (best effort: on failure, warn and keep it).")
]
RewriteRequiredOption = Annotated[
    bool, typer.Option("--rewrite-required", help="Rewrite the prompt first and fail if it cannot (implies --rewrite).")
]

# These flags once took a value (`--queue NAME`, `--rewrite required`); a usage error that shows the old
# spelling names the new one (worldplay_cli/app.py).
OLD_FLAG_VALUES = {
    "--queue": lambda value: f"--queue-name {value}",
    "--rewrite": lambda value: {"required": "--rewrite-required", "best-effort": "--rewrite"}.get(
        value, "--rewrite or --rewrite-required"
    ),
}


def queued(queue: bool, queue_name: Optional[str]) -> bool:
    """Whether the job goes on a queue: `--queue`, or `--queue-name` (naming a queue never runs it here)."""
    return queue or queue_name is not None


def rewrite_policy(rewrite: bool, rewrite_required: bool) -> Optional[Policy]:
    """The rewrite policy of `--rewrite` / `--rewrite-required` (None: no rewrite)."""
    if rewrite_required:
        return "required"
    return "best-effort" if rewrite else None


# How the native engine runs its transformer (`generate`, `bench`): the JobSpec fields of the same names.
CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="Native engine: torch.compile the transformer's blocks (first chunks compile)."),
]
WeightsOption = Annotated[
    str,
    typer.Option(
        "--weights",
        help="Native engine: default (bf16 on CUDA, fp32 on CPU) | fp8 (the blocks' weights in FP8, half of bf16).",
    ),
]
AttentionBackendOption = Annotated[
    str,
    typer.Option(
        "--attention-backend",
        help="Native engine: auto (flash-attn, else SDPA) | flash | sdpa | sage (SageAttention); never a silent fallback.",
    ),
]

# `traj` and `traj edit` took the variant as `--model`/`-m`; both still work, hidden from the help.
VariantAliasOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", hidden=True, help="Deprecated spelling of --variant.", show_default=False),
]


def variant_from(variant: Optional[str], alias: Optional[str], default: Optional[str] = "ar") -> Optional[str]:
    """The variant named by `--variant` or its deprecated alias `--model` (BadInput if they disagree)."""
    from worldplay_cli.contract.errors import BadInput

    if variant is not None and alias is not None and variant != alias:
        raise BadInput(
            f"--variant {variant!r} and --model {alias!r} disagree", "give --variant only (--model is its old name)"
        )
    chosen = variant if variant is not None else alias
    return chosen if chosen is not None else default
