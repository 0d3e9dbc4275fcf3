"""`worldplay traj ...` end to end: happy paths, the bad-input table, and the torch-free import rule."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from trajectories import PRESETS, load_trajectory, parse_pose_string
from worldplay_cli.app import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _official(path, entries) -> str:
    path.write_text(json.dumps(entries))
    return str(path)


def _entry(c2w=None, K=None):
    return {
        "extrinsic": np.eye(4).tolist() if c2w is None else c2w,
        "K": [[500, 0, 320], [0, 500, 240], [0, 0, 1]] if K is None else K,
    }


def _bad_files(tmp_path) -> dict[str, str]:
    """Named malformed trajectory files; their expected messages are in BAD_INPUTS."""
    scaled = np.eye(4)
    scaled[:3, :3] *= 1.5
    files = {
        "garbage": "this is { not json",
        "gap": json.dumps({"0": _entry(), "2": _entry()}),
        "duplicate": f'{{"0": {json.dumps(_entry())}, "0": {json.dumps(_entry())}}}',
        "nan": '{"0": {"extrinsic": [[NaN,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]], "K": [[1,0,1],[0,1,1],[0,0,1]]}}',
        "nonrigid": json.dumps({"0": _entry(), "1": _entry(scaled.tolist())}),
        "shape": json.dumps({"0": _entry(K=[[1, 0], [0, 1]])}),
        "badkey": json.dumps({"0": _entry(), "one": _entry()}),
        "empty": "{}",
        "negative_fx": json.dumps({"0": _entry(K=[[-500, 0, 320], [0, 500, 240], [0, 0, 1]])}),
        "missing_K": json.dumps({"0": {"extrinsic": np.eye(4).tolist()}}),
        "bool": json.dumps({"0": _entry(c2w=[[True, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])}),
        "csv_missing_column": "latent,x,y\n0,0,0\n",
        "csv_gap": "latent,x,y,z,yaw,pitch\n0,0,0,0,0,0\n2,0,0,0,0,0\n",
        "matrices_shape": json.dumps([[1, 2, 3]]),
    }
    paths = {}
    for name, text in files.items():
        path = tmp_path / (f"{name}.csv" if name.startswith("csv") else f"{name}.json")
        path.write_text(text)
        paths[name] = str(path)
    return paths


# (argv, expected substring of the one-line error); "{file:NAME}" is replaced by the path of a bad file.
BAD_INPUTS = [
    (["traj", "show", ""], "trajectory is empty"),
    (["traj", "show", "   "], "trajectory is empty"),
    (["traj", "show", "w"], "missing '-LATENTS' duration in 'w'"),
    (["traj", "show", "w-"], "missing duration after '-'"),
    (["traj", "show", "--", "-3"], "missing action before '-'"),
    (["traj", "show", "w-0"], "zero duration in 'w-0'"),
    (["traj", "show", "w-0.5"], "fractional duration '0.5'"),
    (["traj", "show", "w-3, right-1.5"], "fractional duration '1.5' in 'right-1.5' (column 6)"),
    (["traj", "show", "w--3"], "more than one '-'"),
    (["traj", "show", "w-3-4"], "more than one '-'"),
    (["traj", "show", "w-3, x-4"], "unknown action 'x' in 'x-4' (column 6)"),
    (["traj", "show", "W-4"], "did you mean 'w'?"),
    (["traj", "show", "w-abc"], "duration 'abc' is not a whole number"),
    (["traj", "show", "w+-3"], "empty action around '+'"),
    (["traj", "show", "w+s-3"], "'w' and 's' cancel out"),
    (["traj", "show", "left+right-3"], "'left' and 'right' cancel out"),
    (["traj", "show", "w+w-3"], "'w' repeated"),
    (["traj", "show", "hold+w-3"], "'hold' cannot be combined"),
    (["traj", "show", "w:0-3"], "step '0' is not a positive number"),
    (["traj", "show", "w:abc-3"], "step 'abc' is not a positive number"),
    (["traj", "show", "right:200-3"], "rotation step 200 deg is not below 180"),
    (["traj", "show", "hold:1-3"], "'hold' takes no step size"),
    (["traj", "show", ",,,"], "has no segments"),
    (["traj", "show", "forwrd"], "did you mean the preset 'forward'?"),
    (["traj", "show", "w-3,, x"], "missing '-LATENTS' duration in 'x'"),
    (["traj", "show", "{file:garbage}"], "invalid JSON at line 1"),
    (["traj", "show", "{file:gap}"], "latent 1 is missing"),
    (["traj", "show", "{file:duplicate}"], "duplicate key '0'"),
    (["traj", "show", "{file:nan}"], "non-finite number NaN"),
    (["traj", "show", "{file:nonrigid}"], "latent 1: extrinsic is not a rigid camera-to-world transform"),
    (["traj", "show", "{file:shape}"], "latent 0 'K' must be a 3x3 array of numbers"),
    (["traj", "show", "{file:badkey}"], "key 'one' is not a latent index"),
    (["traj", "show", "{file:empty}"], "must be a non-empty object"),
    (["traj", "show", "{file:negative_fx}"], "K needs positive fx, fy, cx, cy"),
    (["traj", "show", "{file:missing_K}"], "latent 0 has no 'K'"),
    (["traj", "show", "{file:bool}"], "'extrinsic' must be a 4x4 array of numbers"),
    (["traj", "show", "{file:csv_missing_column}"], "CSV is missing column(s) z, yaw, pitch"),
    (["traj", "show", "{file:csv_gap}"], "latent 1 is missing"),
    (["traj", "show", "{file:matrices_shape}"], "expected a list of 4x4 matrices"),
    (["traj", "show", "does/not/exist.json"], "file not found"),
    (["traj", "show", "w-31", "--variant", "xl"], "unknown variant 'xl'"),
    (["traj", "validate", "w-31", "--model", "bi2"], "unknown variant 'bi2'"),  # --model: the old name, still accepted
    (["traj", "validate", "w-31", "--variant", "ar", "--model", "bi"], "--variant 'ar' and --model 'bi' disagree"),
    (["traj", "validate", "w-31", "--frames", "0"], "frame count must be a positive whole number"),
    (["traj", "show", "w-31", "--from", "matrices:sideways"], "unknown camera axes 'sideways'"),
    (["traj", "convert", "w-31", "{tmp}/out.json", "--to", "obj"], "unknown trajectory format 'obj'"),
    (["traj", "new", "w-3", "-o", "{tmp}/x.json", "--fix", "sideways"], "unknown fix 'sideways'"),
    (["traj", "new", "w-31", "-o", "{tmp}/no/such/dir/x.json"], "does not exist"),
    (["traj", "validate", "w-31", "--fix", "pad"], "--fix and --output go together"),
]


@pytest.mark.parametrize(
    ("argv", "expected"), BAD_INPUTS, ids=[" ".join(argv[2:]) or "empty" for argv, _ in BAD_INPUTS]
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, expected):
    files = _bad_files(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    argv = [files[arg[6:-1]] if arg.startswith("{file:") else arg for arg in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert expected in lines[0]


def test_bad_inputs_table_is_large_enough():
    assert len(BAD_INPUTS) >= 25


def test_new_then_show_then_validate(capsys, tmp_path):
    path = tmp_path / "walk.json"
    code, out, _ = run(capsys, "traj", "new", "w-15, w+right-16", "-o", str(path), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["num_latents"] == 32 and summary["num_frames"] == 125 and summary["valid"]["ar"]
    assert load_trajectory(path) == parse_pose_string("w-15, w+right-16")

    code, out, _ = run(capsys, "traj", "show", str(path), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["num_latents"] == 32
    assert [row["action_name"] for row in shown["latents"][:2]] == ["—", "W"]
    assert shown["latents"][20]["action_name"] == "W+→"
    assert shown["latents"][5]["frames"] == [17, 20] and shown["latents"][5]["chunk"] == 1

    code, out, _ = run(capsys, "traj", "show", str(path))
    assert code == 0 and "W+→ (10)" in out and "top view" in out and "o" in out

    code, out, _ = run(capsys, "traj", "validate", str(path), "--variant", "ar", "--frames", "125")
    assert code == 0 and "valid" in out

    code, _, _ = run(capsys, "traj", "new", "w-31", "-o", str(path))
    assert code == 2
    code, _, _ = run(capsys, "traj", "new", "w-31", "-o", str(path), "--force")
    assert code == 0


def test_validate_reports_and_fixes(capsys, tmp_path):
    code, out, _ = run(capsys, "traj", "validate", "w-3, right-1", "--model", "ar", "--frames", "125", "--json")
    report = json.loads(out)
    assert code == 2 and not report["ok"]
    assert any("125 frames need 32 latents" in problem for problem in report["problems"])
    assert [(s["how"], s["num_latents"]) for s in report["suggestions"]] == [("pad", 8), ("trim", 4)]

    code, out, _ = run(capsys, "traj", "validate", "w-3, right-1", "--variant", "bi")
    assert code == 2 and "hold the last pose for 11 more latents" in out

    fixed = tmp_path / "fixed.json"
    code, out, _ = run(capsys, "traj", "validate", "w-3, right-1", "--fix", "pad", "-o", str(fixed), "--json")
    assert code == 0 and json.loads(out)["fixed"]["num_latents"] == 8
    trajectory = load_trajectory(fixed)
    assert trajectory.actions.tolist() == [0, 9, 9, 9, 1, 0, 0, 0]


def test_convert_round_trip_through_nerfstudio(capsys, tmp_path):
    nerfstudio, back = tmp_path / "path.json", tmp_path / "back.json"
    assert run(capsys, "traj", "convert", "orbit-left", str(nerfstudio), "--to", "nerfstudio")[0] == 0
    assert "camera_path" in json.loads(nerfstudio.read_text())
    code, out, _ = run(capsys, "traj", "convert", str(nerfstudio), str(back), "--json")
    assert code == 0 and json.loads(out)["num_latents"] == 32
    original = PRESETS["orbit-left"].trajectory()
    np.testing.assert_allclose(load_trajectory(back).c2w, original.c2w, atol=1e-12)
    np.testing.assert_allclose(load_trajectory(back).K, original.K, rtol=1e-12)


def test_presets_command(capsys):
    code, out, _ = run(capsys, "traj", "presets", "--json")
    listed = json.loads(out)
    assert code == 0 and {row["name"] for row in listed} == set(PRESETS)
    assert all(row["valid"]["ar"] for row in listed)
    code, out, _ = run(capsys, "traj", "presets")
    assert code == 0 and "figure-eight" in out


def test_help_documents_the_grammar(capsys):
    code, out, _ = run(capsys, "traj", "new", "--help")
    assert code == 0 and "ACTION[+ACTION...][:STEP]-LATENTS" in out and "w+right-4" in out


def test_subprocess_bad_input_and_no_torch():
    """A real process: one-line error with exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "traj", "show", "w-3, up-0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: pose string: zero duration in 'up-0' (column 6) (hint: durations count latents and must be at least 1)"
    )


def test_the_variant_is_spelled_variant_and_the_old_model_still_works(capsys):
    code, out, _ = run(capsys, "traj", "validate", "--help")
    assert code == 0 and "--variant" in out and "--model" not in out
    for flag in ("--variant", "--model", "-m"):
        code, out, _ = run(capsys, "traj", "validate", "w-3, right-1", flag, "bi")
        assert code == 2 and "variant bi: invalid" in out
