"""`worldplay traj edit` on the command line: argument checks before the TUI starts, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trajectories import PRESETS, parse_pose_string, save_trajectory
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
        (["--variant", "xx"], "unknown variant 'xx'"),
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
    save_trajectory(parse_pose_string("w-7"), official)
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


@pytest.mark.slow
def test_a_real_terminal_session(tmp_path):
    """The whole command in a pseudo-terminal: type a path, save with ctrl+s, quit, read the --json result."""
    import fcntl
    import os
    import pty
    import select
    import signal
    import struct
    import termios
    import time

    target = tmp_path / "walk.json"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, as a user would start it
        os.environ["TERM"] = "xterm-256color"
        os.execvp(sys.executable, [sys.executable, "-m", "worldplay_cli", "traj", "edit", str(target), "--json"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    output = bytearray()

    def read_until(condition, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, output[-500:].decode(errors="replace")
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    output.extend(os.read(fd, 65536))
                except OSError:  # the child closed the terminal
                    return

    status = None
    try:
        read_until(lambda: b"timeline" in output)
        os.write(fd, b"8w+\x1b[C\x13")  # 8 w + → ctrl+s
        read_until(target.exists)
        os.write(fd, b"\x11")  # ctrl+q
        read_until(lambda: b'"job_ids"' in output)
        deadline = time.monotonic() + 10
        while status is None and time.monotonic() < deadline:
            finished, code = os.waitpid(pid, os.WNOHANG)
            status = code if finished else None
            time.sleep(0.05)
    finally:
        if status is None:  # the editor did not quit: end the child we started
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0
    result = json.loads(output[output.rindex(b"{") :].decode().replace("\r\n", "\n"))
    assert result["saved"] and result["pose"] == "w+right-8" and result["num_latents"] == 9
    assert (tmp_path / "walk.pose.txt").read_text().strip() == "w+right-8"
