"""`worldplay traj edit` on the command line: argument checks before the TUI starts, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trajectories import PRESETS, parse_pose_string
from trajectories.formats import to_nerfstudio
from worldplay_cli.app import main
from worldplay_cli.commands.traj_edit import _load_image, _open
from worldplay_cli.tui.editor.document import document_trajectory


def run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "xx"], "unknown model 'xx'"),
        (["--frames", "127"], "127 frames is not 4k+1"),
        (["--model", "bi", "--frames", "129"], "not a multiple of 16"),
        (["--image", "/nonexistent/picture.png"], "image not found"),
        (["/nonexistent/dir/walk.json"], "directory /nonexistent/dir does not exist"),
        (["W-4"], "unknown action 'W'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert run("traj", "edit", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_file_argument_kinds(tmp_path):
    official = tmp_path / "walk.json"
    parse_pose_string("w-7").save(official)
    document, path, _ = _open(str(official))
    assert path == official and document.pose_string() == "w-7"

    nerfstudio = tmp_path / "ns.json"
    nerfstudio.write_text(json.dumps(to_nerfstudio(parse_pose_string("d-3"))))
    document, path, note = _open(str(nerfstudio))
    assert path is None and "ctrl+s asks" in note  # never overwrite a nerfstudio file with official JSON

    document, path, _ = _open(str(tmp_path / "new.json"))
    assert path == tmp_path / "new.json" and document.num_latents == 1

    document, path, _ = _open("orbit-left")
    assert path is None and document_trajectory(document) == PRESETS["orbit-left"].trajectory()


def test_reference_image_is_shrunk_for_the_preview(tmp_path):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(path)
    image = _load_image(path)
    assert image.shape == (384, 768, 3) and image.dtype.name == "uint8"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert run("traj", "edit", "--image", str(tmp_path / "bad.png")) == 2


def test_textual_is_imported_only_when_the_editor_runs():
    code = (
        "import sys; import worldplay_cli.app; import worldplay_cli.commands.traj_edit; "
        "assert 'textual' not in sys.modules, 'textual imported at startup'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
