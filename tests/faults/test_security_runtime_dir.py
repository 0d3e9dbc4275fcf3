"""Issue #17: `$TMPDIR/worldplay-<uid>` holds sockets (resident runtime, the embedded Redis of a deep data
dir). In a shared /tmp anyone can create it first; worldplay must not use one it cannot trust."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import pytest

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.contract.settings import runtime_dir

OTHER_UID = 65534  # nobody


@pytest.fixture
def tmpdir_root(tmp_path, monkeypatch):
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # gettempdir() caches its first answer
    return root


def test_the_runtime_dir_is_created_private(tmpdir_root):
    directory = runtime_dir()
    assert directory == tmpdir_root / f"worldplay-{os.getuid()}"
    assert stat.S_IMODE(directory.lstat().st_mode) == 0o700
    assert runtime_dir() == directory  # an existing private one of ours is used as it is


@pytest.mark.parametrize(
    "plant, problem",
    [
        (lambda path: (path.mkdir(), path.chmod(0o777)), "is writable by group or others (mode 777)"),
        (lambda path: (path.mkdir(), path.chmod(0o720)), "is writable by group or others (mode 720)"),
        (lambda path: (path.mkdir(0o700), os.chown(path, OTHER_UID, -1)), f"is owned by uid {OTHER_UID}, not by you"),
        (
            lambda path: (path.with_name("elsewhere").mkdir(0o700), path.symlink_to(path.with_name("elsewhere"))),
            "is not a directory",
        ),
    ],
    ids=["world-writable", "group-writable", "someone-elses", "symlink"],
)
def test_a_planted_runtime_dir_is_refused(tmpdir_root, plant, problem):
    if "owned" in problem and os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    planted = tmpdir_root / f"worldplay-{os.getuid()}"
    plant(planted)
    with pytest.raises(WorldplayError) as refused:
        runtime_dir()
    assert refused.value.message.startswith(f"runtime directory {planted} {problem}")
    assert refused.value.message.endswith("; refusing to use it for sockets")
    assert "remove it" in refused.value.hint


def test_the_embedded_redis_does_not_put_its_socket_in_a_planted_runtime_dir(worldplay_env, tmpdir_root, tmp_path):
    """A real `worldplay server start` whose data dir is too deep for a socket path."""
    planted = tmpdir_root / f"worldplay-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    env = {**os.environ, "WORLDPLAY_SERVER__DATA_DIR": str(deep)}
    env.pop("WORLDPLAY_REDIS_URL")  # the embedded server, not the test's
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worldplay_cli", "server", "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip().splitlines() == [
            (
                f"error: runtime directory {planted} is writable by group or others (mode 777); refusing to use it for "
                "sockets (hint: remove it so worldplay re-creates it private (0700), or point TMPDIR at a private directory)"
            )
        ]
        assert list(planted.iterdir()) == [] and not (deep / "redis.pid").exists()
    finally:
        subprocess.run(
            [sys.executable, "-m", "worldplay_cli", "server", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
