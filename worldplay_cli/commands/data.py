"""`worldplay data`: make training datasets (synthetic clips; cached latents and condition states)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from worldplay_cli.options import JsonOption

data_app = typer.Typer(
    name="data",
    help="Training data: generate synthetic clips, prepare (encode) a dataset. See docs/training.md.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app)


def _check_output_dir(out: Path) -> None:
    """`out` is (or can be made as) a writable directory: refused here, not by a traceback in the child."""
    import os

    from worldplay_cli.contract.errors import BadInput

    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory", "choose a new or existing directory for the output")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInput(f"cannot create {out}: {ancestor} is not a directory", "choose a directory path for the output")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInput(f"cannot create {out}: {ancestor} is not writable", "choose a writable directory for the output")


PREPARE_HELP = """Encode a raw dataset (SRC/dataset.json: clips of video + per-frame actions and/or poses + prompt) into OUT: VAE latents and text/vision states in safetensors shards with an index.json.

Bad clips (wrong fps, too short, missing or malformed actions/poses, unreadable video) are listed with their reason and skipped; the rest is prepared. Re-running the command resumes an interrupted run.
"""


@data_app.command("prepare", help=PREPARE_HELP)
def prepare(
    src: Annotated[Path, typer.Argument(help="Raw dataset directory (with dataset.json) or the manifest file.")],
    out: Annotated[Path, typer.Argument(help="Output directory of the prepared dataset.")],
    model_dir: Annotated[
        Path, typer.Option("--model-dir", help="Official model directory (its VAE and encoders are used).")
    ],
    width: Annotated[
        Optional[int], typer.Option(help="Frame width (multiple of 16; default: the first clip's).", show_default=False)
    ] = None,
    height: Annotated[
        Optional[int],
        typer.Option(help="Frame height (multiple of 16; default: the first clip's).", show_default=False),
    ] = None,
    min_frames: Annotated[
        int, typer.Option(help="Shorter clips (after alignment to 4k+1 frames) are rejected.", min=1)
    ] = 17,
    max_frames: Annotated[
        Optional[int], typer.Option(help="Cut longer clips to this many frames.", show_default=False, min=1)
    ] = None,
    clips_per_shard: Annotated[int, typer.Option(help="Clips per safetensors shard.", min=1)] = 8,
    device: Annotated[str, typer.Option(help="Device for the encoders (cpu, cuda, cuda:1).")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    from worldplay_cli.commands.train import run_training_process
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.training import load_source_manifest
    from worldplay_cli.output import emit

    for name, value in (("width", width), ("height", height)):
        if value is not None and (value < 16 or value % 16):
            raise BadInput(
                f"--{name} {value} must be a multiple of 16 (at least 16)", f"e.g. --{name} {max(16, value // 16 * 16)}"
            )
    if max_frames is not None and max_frames < min_frames:
        raise BadInput(
            f"--max-frames {max_frames} is below --min-frames {min_frames}: every clip would be rejected",
            "raise --max-frames or lower --min-frames",
        )
    manifest = load_source_manifest(src)
    if not model_dir.is_dir():
        raise BadInput(
            f"model directory {model_dir} does not exist", "pass --model-dir pointing at the official layout"
        )
    _check_output_dir(out)
    arguments = ["prepare", str(src), str(out), "--model-dir", str(model_dir), "--min-frames", str(min_frames)]
    arguments += ["--clips-per-shard", str(clips_per_shard), "--device", device]
    for flag, value in (("--width", width), ("--height", height), ("--max-frames", max_frames)):
        if value is not None:
            arguments += [flag, str(value)]
    summary = run_training_process(arguments)

    def render(console) -> None:
        console.print(
            f"prepared {summary['clips']} of {len(manifest.clips)} clips into {summary['out']} ({summary['width']}x{summary['height']}, {summary['fps']:g} fps)"
        )
        for clip in summary["rejected"]:
            console.print(f"[yellow]rejected[/] {clip['id']}: {clip['reason']}")

    emit(summary, as_json, render)


@data_app.command(
    "synth",
    help="Render synthetic clips (textured rooms, random walks with their keys, mouse and poses) as a raw dataset.",
)
def synth(
    out: Annotated[Path, typer.Argument(help="Output directory (gets dataset.json and clips/).")],
    clips: Annotated[int, typer.Option(help="Training clips (random walks).", min=0)] = 32,
    validation: Annotated[int, typer.Option(help="Validation clips (scripted single actions).", min=0)] = 4,
    width: Annotated[int, typer.Option(help="Frame width.", min=16)] = 64,
    height: Annotated[int, typer.Option(help="Frame height.", min=16)] = 64,
    latents: Annotated[int, typer.Option(help="Latents per clip (frames = 4·(latents−1)+1).", min=2)] = 24,
    fps: Annotated[int, typer.Option(help="Frame rate.", min=1)] = 16,
    seed: Annotated[int, typer.Option(help="Random seed.", min=0)] = 0,
    move_step: Annotated[
        float, typer.Option(help="World units per frame while W/S/A/D is held (the room is 8 units wide).", min=0.001)
    ] = 0.04,
    turn_deg: Annotated[float, typer.Option(help="Degrees per frame while the view turns.", min=0.01)] = 1.5,
    texture_period: Annotated[
        float, typer.Option(help="World units per texture repeat (larger: smoother frames).", min=0.1)
    ] = 2.0,
    view: Annotated[
        str,
        typer.Option(
            help="first: the camera is the walker; third: it follows an avatar ball (mouse orbits it; tps labels)."
        ),
    ] = "first",
    as_json: JsonOption = False,
) -> None:
    from worldplay_cli.commands.train import run_training_process
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.output import emit

    if clips + validation == 0:
        raise BadInput("nothing to generate", "pass --clips and/or --validation above 0")
    max_latents = load_settings().limits.max_latents
    if latents > max_latents:
        raise BadInput(
            f"--latents {latents} is more than the limit of {max_latents}",
            "set limits.max_latents to allow longer clips",
        )
    if view not in ("first", "third"):
        raise BadInput(f"unknown --view {view!r}", "use first or third")
    _check_output_dir(out)
    arguments = ["synth", str(out), "--clips", str(clips), "--validation", str(validation), "--width", str(width)]
    arguments += ["--height", str(height), "--latents", str(latents), "--fps", str(fps), "--seed", str(seed)]
    arguments += ["--move-step", str(move_step), "--turn-deg", str(turn_deg), "--texture-period", str(texture_period)]
    arguments += ["--view", view]
    summary = run_training_process(arguments)
    emit(
        summary,
        as_json,
        lambda console: console.print(
            f"wrote {clips} + {validation} clips of {summary['frames']} frames: {summary['manifest']}"
        ),
    )


@data_app.command(
    "import",
    help="Write OUT/dataset.json over game footage annotated the FastVideo MatrixGame2 / Zelda way: an annotation "
    'JSON list of {"path": video, "cap": caption, "action_path": keys.npy} or a merge file of <folder>,<annotation> '
    "lines. The clips stay where they are; prepare OUT next.",
)
def import_annotations(
    source: Annotated[Path, typer.Argument(help="Annotation JSON or merge file.")],
    out: Annotated[Path, typer.Argument(help="Directory that gets dataset.json.")],
    fps: Annotated[float, typer.Option(help="The clips' frame rate (MatrixGame2 data: 25).", min=0.001)] = 25.0,
    layout: Annotated[str, typer.Option(help="matrixgame2 (W S A D) or zelda (W S A D turn_left turn_right).")] = (
        "matrixgame2"
    ),
    view: Annotated[str, typer.Option(help="first, or third (the camera follows an avatar; tps labels).")] = "first",
    degrees_per_unit: Annotated[float, typer.Option(help="Degrees per frame of one mouse unit.", min=1e-6)] = 1.0,
    pitch_sign: Annotated[int, typer.Option(help="-1 when positive pitch looks down.")] = 1,
    validation_every: Annotated[int, typer.Option(help="Every N-th clip is a validation clip (0: none).", min=0)] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing OUT/dataset.json.")] = False,
    as_json: JsonOption = False,
) -> None:
    from worldplay_cli.contract.errors import BadInput
    from worldplay_cli.contract.training import MANIFEST_NAME
    from worldplay_cli.gamedata import manifest_from_annotations
    from worldplay_cli.output import emit

    if view not in ("first", "third"):
        raise BadInput(f"unknown --view {view!r}", "use first or third")
    if pitch_sign not in (1, -1):
        raise BadInput(f"--pitch-sign must be 1 or -1, got {pitch_sign}")
    _check_output_dir(out)
    target = out / MANIFEST_NAME
    if target.exists() and not force:
        raise BadInput(f"{target} already exists", "pass --force to overwrite")
    manifest = manifest_from_annotations(source, fps, layout, view, degrees_per_unit, pitch_sign, validation_every)
    out.mkdir(parents=True, exist_ok=True)
    target.write_text(manifest.model_dump_json(indent=2) + "\n")
    splits = [clip.split for clip in manifest.clips]
    data = {"manifest": str(target), "train": splits.count("train"), "validation": splits.count("validation")}
    emit(
        data,
        as_json,
        lambda console: console.print(
            f"wrote {target}: {data['train']} + {data['validation']} clips ({layout}, {view} person)"
        ),
    )
