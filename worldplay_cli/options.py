"""The options several commands share, as `Annotated` aliases: a command declares `as_json: JsonOption = False`
and gets the same flag, help and checks as every other command.

Same names as the settings and the job spec they feed: `--variant` is `variant` everywhere (`--model` of the
`traj` commands is a hidden, deprecated alias: `VariantAliasOption` and `variant_from`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def check_redis_url_option(url: Optional[str]) -> Optional[str]:
    """A `--redis-url` with a scheme worldplay cannot use is bad input, refused before anything runs."""
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.settings import REDIS_URL_HINT, mask_url, redis_url_problem

    problem = url is not None and redis_url_problem(url)
    if problem:
        raise BadInput(f"--redis-url {mask_url(url)!r}: {problem}", REDIS_URL_HINT)
    return url


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
