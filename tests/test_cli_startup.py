"""What `worldplay jobs list` pays to start (docs/performance.md): Typer builds only the command named, in
a group too; a listing with nothing to reap imports no rq; the console script collects rarely and still
prints everything and exits with the command's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIST_PROBE = """
import sys
from worldplay_cli.app import main
try:
    main(["jobs", "list"])
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted({name.split(".")[0] for name in sys.modules} & {"rq", "numpy", "torch"}), file=sys.stderr)
print(sorted(name for name in sys.modules if name.startswith("worldplay_cli.commands.")), file=sys.stderr)
"""


def test_a_listing_with_nothing_to_reap_imports_no_rq_and_no_other_command(worldplay_env):
    result = subprocess.run([sys.executable, "-c", LIST_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "0 of 0 shown" in result.stdout, result.stderr
    heavy, commands = result.stderr.strip().splitlines()[-2:]
    assert heavy == "[]"
    assert commands == "['worldplay_cli.commands.jobs']"


def test_typer_builds_only_the_named_command_of_a_group():
    import typer

    from worldplay_cli.app import _app_for, _register_commands

    _register_commands([])  # every command, as `worldplay --help` has them
    command = typer.main.get_command(_app_for(["jobs", "list", "--limit", "3"]))
    assert list(command.commands) == ["jobs"]
    assert list(command.commands["jobs"].commands) == ["list"]
    # A mistyped or missing name keeps the whole group, for its suggestions and its help.
    for args in (["jobs", "lst"], ["jobs"], ["jobs", "--help"]):
        group = typer.main.get_command(_app_for(args)).commands["jobs"]
        assert {"list", "show", "cancel", "rm"} <= set(group.commands)


def test_mistakes_in_a_group_still_name_what_to_read(cli):
    code, _, err = cli("jobs", "lst")
    assert code == 2 and "no such command 'lst'" in err and "'list'" in err and "worldplay jobs --help" in err
    code, _, err = cli("jobs", "list", "--bogus")
    assert code == 2 and "worldplay jobs list --help" in err


def test_the_console_script_prints_everything_and_keeps_its_exit_code(worldplay_env):
    script = shutil.which("worldplay", path=str(Path(sys.executable).parent))
    assert script, "the package is installed (pip install -e .)"
    env = {**os.environ, "COLUMNS": "160"}
    listed = subprocess.run([script, "jobs", "list"], capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "0 of 0 shown; all jobs: none"
    wrong = subprocess.run(
        [script, "jobs", "list", "--status", "bogus"], capture_output=True, text=True, timeout=120, env=env
    )
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error: unknown status 'bogus'") and wrong.stdout == ""


def test_every_command_module_adds_the_command_it_is_named_after():
    """The CLI imports only the modules of the command a command line names (`app._register_commands`):
    a module adds the command of its name, or extends the group its name starts with (`traj_edit`)."""
    import importlib
    import pkgutil

    import typer

    from worldplay_cli import commands

    def names(app: typer.Typer) -> set[str]:
        found = {info.name for info in app.registered_commands}
        return found | {info.name or info.typer_instance.info.name for info in app.registered_groups}

    modules = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    for module in modules:
        app = typer.Typer()
        base = module.split("_")[0]
        if base != module:
            assert base in modules, f"{module} extends no command module"
            importlib.import_module(f"worldplay_cli.commands.{base}").register(app)
        before = names(app)
        importlib.import_module(f"worldplay_cli.commands.{module}").register(app)
        added = names(app) - before
        assert added == (set() if base != module else {module.replace("_", "-")}), (module, added)
