"""`worldplay traj edit`: author a camera trajectory in a terminal UI (map, timeline, live preview, submit).

Adds the `edit` command to the `traj` group that `worldplay_cli.commands.traj` registers (modules are
registered in alphabetical order, so the group exists by the time this module's `register` runs).
Textual, PIL and the queue client are imported inside the command so `worldplay --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import ConfigOption, OutputRootOption, RedisUrlOption, VariantAliasOption, variant_from

HELP = (
    "Edit a camera trajectory: top-down map and side view, latent timeline, live preview, submit.\n\n"
    "FILE is opened if it exists (official JSON, nerfstudio, CSV, plain JSON) and ctrl+s saves back to it when it "
    "is official JSON; a FILE that does not exist yet is created on save. A pose string or preset name starts from "
    "that path instead.\n\n"
    "Keys: w/a/s/d move, arrows turn, 8w repeats, + combines (w + → makes W+→), shift latches, u undoes, "
    "f/t fix the length, ? lists every key, ctrl+p opens the command palette."
)

# The preview only needs a few hundred pixels; a smaller source keeps re-rendering fast.
PREVIEW_SOURCE_PIXELS = 768


def register(app: typer.Typer) -> None:
    for group in app.registered_groups:
        if group.name == "traj" and group.typer_instance is not None:
            group.typer_instance.command("edit", help=HELP)(edit)
            return


def edit(
    file: Annotated[
        Optional[str],
        typer.Argument(help="Trajectory file (created on save if missing), pose string or preset.", show_default=False),
    ] = None,
    image: Annotated[
        Optional[Path],
        typer.Option(
            "--image",
            "-i",
            help="Reference image or a bundled example (meadow, city): turns on the live preview; submitted jobs use it.",
            show_default=False,
        ),
    ] = None,
    variant: Annotated[
        Optional[str],
        typer.Option(
            "--variant", help="Check lengths for ar (chunks of 4 latents) or bi (16); default ar.", show_default=False
        ),
    ] = None,
    frames: Annotated[
        Optional[int],
        typer.Option(
            "--frames", help="Target pixel frames (4k+1); length checks and fixes aim for it.", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the session's result (saved file, jobs) as JSON on exit.")
    ] = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    output_root: OutputRootOption = None,
    model: VariantAliasOption = None,
) -> None:
    from functools import partial

    from trajectories import CHUNK, MODELS, frames_to_latents
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.output import emit

    model = variant_from(variant, model)  # the editor checks lengths for this variant
    if model not in MODELS:
        raise BadInput(f"unknown variant {model!r}", f"use one of: {', '.join(MODELS)}")
    if frames is not None:
        latents = frames_to_latents(frames)
        if latents % CHUNK[model]:
            raise BadInput(
                f"--frames {frames} is {latents} latents, not a multiple of {CHUNK[model]} as {model} needs",
                f"use a multiple of {CHUNK[model]} latents, e.g. --frames {4 * (latents // CHUNK[model] + 1) * CHUNK[model] - 3}",
            )
    from worldplay_cli.runtime import Runtime

    runtime = Runtime(config, redis_url, output_root)  # settings (and their limits) before FILE is read
    document, path, note = _open(file)
    if image is not None:
        from worldplay_cli.submit import image_path_for

        image = image_path_for(image)
    reference = _load_image(image) if image is not None else None

    from worldplay_cli.tui.editor.app import EditorApp
    from worldplay_cli.tui.editor.state import EditorState
    from worldplay_cli.tui.editor.submit import submit_trajectory

    submitter = partial(submit_trajectory, settings=runtime.settings, connect=lambda: runtime.conn, image=image)
    state = EditorState(document, model=model, frames=frames)
    state.message = note
    app = EditorApp(
        state,
        path=path,
        reference=reference,
        submitter=submitter,
        default_variant=runtime.settings.default_variant,
        default_engine=runtime.settings.default_engine,
    )
    result = app.run()
    if result is None:
        return
    data = {
        "path": str(result.path) if result.path else None,
        "saved": result.saved,
        "num_latents": result.num_latents,
        "num_frames": result.num_frames,
        "pose": result.pose,
        "job_ids": result.job_ids,
    }

    def render(console) -> None:
        if result.saved:
            console.print(f"saved {result.path}: {result.num_latents} latents, {result.num_frames} frames")
        for job_id in result.job_ids:
            console.print(f"queued job {job_id}")

    emit(data, as_json, render)


def _open(file: str | None):
    """(document, save path or None, a note for the status line) for the FILE argument."""
    from trajectories import resolve
    from trajectories.formats import detect_format
    from trajectories.official import read_json
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.tui.editor.document import Document, document_from_trajectory

    if file is None:
        return Document(), None, ""
    path = Path(file).expanduser()
    if path.is_file():
        document = document_from_trajectory(resolve(path))
        if path.suffix.lower() == ".json" and detect_format(path, read_json(path)) == "official":
            return document, path, f"opened {path.name}"
        return document, None, f"imported {path.name}; ctrl+s asks where to save the official JSON"
    if path.suffix.lower() == ".json" or "/" in file:
        if not path.parent.is_dir():
            raise BadInput(f"directory {path.parent} does not exist", "create it first or give another FILE")
        return Document(), path, f"new file {path.name}"
    return document_from_trajectory(resolve(file)), None, f"started from {file}"


def _load_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.submit import check_image_pixels

    if not path.is_file():
        raise BadInput(f"image not found: {path}", "check the path given to --image")
    try:
        with Image.open(path) as opened:
            check_image_pixels(opened.width, opened.height, path)  # from the header, before decoding
            picture = opened.convert("RGB")
    except Image.DecompressionBombError:
        raise BadInput(f"image {path} has too many pixels to decode safely", "use a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise BadInput(f"cannot read image {path}: {error}", "use a PNG or JPEG file") from None
    picture.thumbnail((PREVIEW_SOURCE_PIXELS, PREVIEW_SOURCE_PIXELS))
    return np.asarray(picture)
