"""`worldplay traj`: make, inspect, validate and convert camera trajectories (no GPU, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from worldplay_cli.contract import variants
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.options import JsonOption, VariantAliasOption, variant_from
from worldplay_cli.output import emit

SPEC_HELP = "A pose string (e.g. 'w-31'), a preset name (see `worldplay traj presets`) or a trajectory file."

GRAMMAR_HELP = (
    "Pose strings: comma-separated segments ACTION[+ACTION...][:STEP]-LATENTS. One latent is 4 video frames "
    "and latent 0 (the start pose) is implicit, so 'w-31' is 32 latents = 125 frames.\n\n"
    "Actions: w / s (forward / back) and a / d (left / right) move along the camera's own axes (default step "
    "0.08); up / down pitch and left / right yaw (default step 3 degrees); hold stands still.\n\n"
    "Examples: 'w-31' · 'w-15, right-16' · 'w+right-4' (walk while turning) · 'd+up:1.5-8' · 'w:0.12-3, hold-4'."
)

traj_app = typer.Typer(
    name="traj",
    help="Camera trajectories: create, show, validate, convert.\n\n" + GRAMMAR_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
)

FORMAT_HELP = (
    "official | nerfstudio | csv | json | matrices[:opencv|opengl[:c2w|w2c]] | keys[:matrixgame2|zelda[:first|third]] "
    "(default: from the file; .csv is csv, .npy a MatrixGame2 key log, otherwise official JSON)"
)


def _models():
    from trajectories import MODELS

    return MODELS


def _check_model(model: str) -> str:
    if model not in _models():
        raise BadInput(f"unknown variant {model!r}", f"use one of: {', '.join(_models())}")
    return model


def _check_output(path: Path, force: bool) -> None:
    if path.is_dir():
        raise BadInput(f"{path} is a directory", "give a file path to write")
    if path.exists() and not force:
        raise BadInput(f"{path} already exists", "pass --force to overwrite")
    if not path.parent.is_dir():
        raise BadInput(f"directory {path.parent} does not exist", "create it first, or write somewhere else")


def _load(spec: str, fmt: Optional[str] = None):
    from trajectories import load_trajectory, resolve
    from worldplay_cli.contract.settings import load_settings

    load_settings()  # the limits.* settings: how long a trajectory, how large a file, may be

    if fmt is not None:
        return load_trajectory(Path(spec), fmt)
    return resolve(spec)


def _save(trajectory, output: Path, fmt: Optional[str] = None) -> None:
    from trajectories import save_trajectory

    save_trajectory(trajectory, output, fmt)


def _validity(trajectory) -> dict[str, bool]:
    return {model: trajectory.validate(model).ok for model in _models()}


def _validity_text(validity: dict[str, bool]) -> str:
    return "  ".join(f"{model} {'[green]ok[/]' if ok else '[red]no[/]'}" for model, ok in validity.items())


@traj_app.command("new", help="Write a trajectory file from a pose string or preset.\n\n" + GRAMMAR_HELP)
def new(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="File to write."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="With --fix: the variant to make it valid for (default ar).", show_default=False
    ),
    fix: Optional[str] = typer.Option(None, "--fix", help="pad (hold the last pose) or trim to a valid length."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    as_json: JsonOption = False,
    model: VariantAliasOption = None,
) -> None:
    trajectory = _load(spec)
    if fix is not None:
        trajectory = trajectory.fixed(_check_model(variant_from(variant, model)), fix)
    _check_output(output, force)
    _save(trajectory, output, fmt)
    data = {
        "path": str(output),
        "num_latents": trajectory.num_latents,
        "num_frames": trajectory.num_frames,
        "valid": _validity(trajectory),
    }

    def render(console) -> None:
        console.print(
            f"wrote {output}: {data['num_latents']} latents, {data['num_frames']} frames   {_validity_text(data['valid'])}"
        )

    emit(data, as_json, render)


@traj_app.command("show", help="Per-latent table (position, yaw/pitch, action, chunks) and a top-down plot.")
def show(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    fmt: Optional[str] = typer.Option(None, "--from", help="Input format. " + FORMAT_HELP),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="Variant whose chunk boundaries to mark (default ar).", show_default=False
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw the top-down path."),
    view: str = typer.Option(
        "first",
        "--view",
        help="Label actions as first person, or third (the official tps rule: no move while turning).",
    ),
    as_json: JsonOption = False,
    model: VariantAliasOption = None,
) -> None:
    from trajectories import CHUNK, Trajectory, action_name, compute_actions

    if view not in ("first", "third"):
        raise BadInput(f"unknown --view {view!r}", "use first or third")
    trajectory = _load(spec, fmt)
    if view == "third":
        actions = compute_actions(trajectory.c2w, third_person=True)
        trajectory = Trajectory(trajectory.c2w, trajectory.K, actions, trajectory.source)
    model = _check_model(variant_from(variant, model))
    chunk = CHUNK[model]
    positions, angles = trajectory.positions(), trajectory.yaw_pitch_roll()
    rows = []
    for latent in range(trajectory.num_latents):
        first_frame = 0 if latent == 0 else 4 * latent - 3
        rows.append(
            {
                "latent": latent,
                "frames": [first_frame, 4 * latent],
                "chunk": latent // chunk,
                "position": positions[latent].tolist(),
                "yaw": float(angles[latent, 0]),
                "pitch": float(angles[latent, 1]),
                "roll": float(angles[latent, 2]),
                "action": int(trajectory.actions[latent]),
                "action_name": action_name(trajectory.actions[latent]),
            }
        )
    data = {
        "source": trajectory.source or spec,
        "num_latents": trajectory.num_latents,
        "num_frames": trajectory.num_frames,
        "valid": _validity(trajectory),
        "latents": rows,
    }

    def render(console) -> None:
        from rich.table import Table

        from trajectories.plot import top_down_plot

        table = Table(
            title=f"{data['source']}: {data['num_latents']} latents, {data['num_frames']} frames",
            caption=f"valid for: {_validity_text(data['valid'])}   (lines mark {model} chunks of {chunk})",
        )
        for column in ("latent", "frames", "x", "y", "z", "yaw°", "pitch°", "action"):
            table.add_column(column, justify="right" if column != "action" else "left")
        for row in rows:
            x, y, z = row["position"]
            frames = f"{row['frames'][0]}" if row["latent"] == 0 else f"{row['frames'][0]}-{row['frames'][1]}"
            table.add_row(
                str(row["latent"]),
                frames,
                f"{x:+.3f}",
                f"{y:+.3f}",
                f"{z:+.3f}",
                f"{row['yaw']:+.1f}",
                f"{row['pitch']:+.1f}",
                f"{row['action_name']} ({row['action']})",
                end_section=(row["latent"] + 1) % chunk == 0,
            )
        console.print(table)
        if plot:
            console.print("top view (x right, z forward up; o start, arrow = final heading):")
            console.print("\n".join(top_down_plot(trajectory)), markup=False, highlight=False)

    emit(data, as_json, render)


@traj_app.command("validate", help="Check a trajectory against a variant (and a frame count); suggest or apply a fix.")
def validate(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    variant: Optional[str] = typer.Option(
        None, "--variant", help=f"{' | '.join(variants.names())} (default: ar)", show_default=False
    ),
    frames: Optional[int] = typer.Option(None, "--frames", help="Pixel frames you will generate (4k+1, e.g. 125)."),
    fmt: Optional[str] = typer.Option(None, "--from", help="Input format. " + FORMAT_HELP),
    fix: Optional[str] = typer.Option(None, "--fix", help="pad or trim, written to --output."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where --fix writes the fixed trajectory."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output."),
    as_json: JsonOption = False,
    model: VariantAliasOption = None,
) -> None:
    trajectory = _load(spec, fmt)
    model = _check_model(variant_from(variant, model))
    report = trajectory.validate(model, frames)
    if (fix is None) != (output is None):
        raise BadInput("--fix and --output go together", "e.g. --fix pad -o fixed.json")
    data = report.to_dict()
    if fix is not None:
        fixed = trajectory.fixed(model, fix)
        _check_output(output, force)
        _save(fixed, output)
        data["fixed"] = {
            "path": str(output),
            "how": fix,
            "num_latents": fixed.num_latents,
            "num_frames": fixed.num_frames,
        }

    def render(console) -> None:
        head = f"{report.num_latents} latents, {report.num_frames} frames, variant {report.model}: "
        console.print(head + ("[green]valid[/]" if report.ok else "[red]invalid[/]"))
        for problem in report.problems:
            console.print(f"  problem: {problem}", highlight=False)
        for suggestion in report.suggestions:
            console.print(
                f"  fix ({suggestion.how}): {suggestion.description} -> {suggestion.num_latents} latents, "
                f"{suggestion.num_frames} frames",
                highlight=False,
            )
        if "fixed" in data:
            fixed_info = data["fixed"]
            console.print(
                f"wrote {fixed_info['path']}: {fixed_info['num_latents']} latents, {fixed_info['num_frames']} frames"
            )
        elif report.suggestions:
            console.print(f"  apply with: worldplay traj validate ... --variant {model} --fix pad -o fixed.json")

    emit(data, as_json, render)
    if not report.ok and fix is None:
        # Not typer.Exit: app.main() runs click with standalone_mode=False, which returns its code instead.
        raise SystemExit(2)


@traj_app.command(
    "convert",
    help="Convert between trajectory formats. Conventions are explicit: official/csv/json are OpenCV "
    "camera-to-world; nerfstudio is OpenGL camera-to-world; matrices:AXES:KIND says which.",
)
def convert(
    source: str = typer.Argument(..., help=SPEC_HELP),
    output: Path = typer.Argument(..., help="File to write."),
    from_fmt: Optional[str] = typer.Option(None, "--from", help="Input format. " + FORMAT_HELP),
    to_fmt: Optional[str] = typer.Option(None, "--to", help="Output format. " + FORMAT_HELP),
    rebase: bool = typer.Option(False, "--rebase", help="Re-express the path relative to its first camera."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Multiply camera positions (scene scale)."),
    view: Optional[str] = typer.Option(
        None,
        "--view",
        help="Key logs (--from/--to keys): first (the camera is the player) or third (it follows an avatar; "
        "the official tps labels).",
        show_default=False,
    ),
    layout: Optional[str] = typer.Option(
        None,
        "--layout",
        help="Key logs: matrixgame2 (W S A D) or zelda (W S A D turn_left turn_right).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    as_json: JsonOption = False,
) -> None:
    from trajectories.formats import parse_format

    if view is not None or layout is not None:
        keyed = [spec for spec in (from_fmt, to_fmt) if spec is not None and spec.split(":")[0].lower() == "keys"]
        if not keyed:
            raise BadInput("--view and --layout describe key logs", "use them with --from keys or --to keys")
        from_fmt, to_fmt = (_keys_spec(spec, layout, view) for spec in (from_fmt, to_fmt))
    for spec in (from_fmt, to_fmt):
        if spec is not None:
            parse_format(spec)
    trajectory = _load(source, from_fmt)
    if rebase:
        trajectory = trajectory.rebased()
    if scale is not None:
        trajectory = trajectory.scaled(scale)
    _check_output(output, force)
    _save(trajectory, output, to_fmt)
    data = {"path": str(output), "format": to_fmt or "auto", "num_latents": trajectory.num_latents}
    emit(data, as_json, lambda console: console.print(f"wrote {output} ({trajectory.num_latents} latents)"))


def _keys_spec(spec: Optional[str], layout: Optional[str], view: Optional[str]) -> Optional[str]:
    """`keys:LAYOUT:VIEW` from `--from/--to keys[...]` with `--layout`/`--view` filled in; other specs unchanged."""
    if spec is None or spec.split(":")[0].lower() != "keys":
        return spec
    parts = spec.split(":")[1:] + ["", ""]
    return ":".join(["keys", layout or parts[0], view or parts[1]]).rstrip(":")


@traj_app.command("presets", help="List the built-in trajectories (usable by name anywhere a trajectory is asked for).")
def presets(as_json: JsonOption = False) -> None:
    from trajectories import PRESETS

    data = []
    for preset in PRESETS.values():
        trajectory = preset.trajectory()
        data.append(
            {
                "name": preset.name,
                "pose": preset.pose,
                "description": preset.description,
                "num_latents": trajectory.num_latents,
                "num_frames": trajectory.num_frames,
                "valid": _validity(trajectory),
            }
        )

    def render(console) -> None:
        from rich.table import Table

        table = Table(title="trajectory presets")
        for column in ("name", "latents", "frames", "valid for", "description", "pose string"):
            table.add_column(column)
        for row in data:
            valid = ", ".join(model for model, ok in row["valid"].items() if ok)
            table.add_row(
                row["name"], str(row["num_latents"]), str(row["num_frames"]), valid, row["description"], row["pose"]
            )
        console.print(table)

    emit(data, as_json, render)


def register(app: typer.Typer) -> None:
    app.add_typer(traj_app, name="traj")
