"""Submitting from the editor puts a valid job on a real Redis (the session redis-server of conftest)."""

from __future__ import annotations

from functools import partial

import pytest

from trajectories import Trajectory, load_trajectory, save_trajectory
from tui_util import settle
from worldplay_cli.contract.queue import fetch_job
from worldplay_cli.contract.settings import Settings
from worldplay_cli.contract.specs import JobSpec
from worldplay_cli.tui.editor.app import EditorApp, EditorScreen
from worldplay_cli.tui.editor.document import document_from_trajectory
from worldplay_cli.tui.editor.screens import SubmitScreen
from worldplay_cli.tui.editor.state import EditorState
from worldplay_cli.tui.editor.submit import UNSAVED_SOURCE, SubmitForm, submit_trajectory


@pytest.fixture
def submitter(redis_conn, tmp_path):
    """The real submit function wired to the test's Redis database and output root, and its settings."""
    settings = Settings(output_root=tmp_path / "outputs")
    return partial(submit_trajectory, settings=settings, connect=lambda: redis_conn), settings


async def test_submit_form_enqueues_a_valid_job(submitter, redis_conn):
    from textual.widgets import Label

    submit, settings = submitter
    app = EditorApp(EditorState(), submitter=submit, default_variant="ar-distilled", default_engine="preview")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "w", "plus", "right", "ctrl+g")
        assert isinstance(app.screen, SubmitScreen)
        screen = app.screen
        assert screen.form().variant == "ar-distilled" and screen.form().engine == "preview"
        # Every field has its label on its left.
        grid = list(screen.query_one("#submit-grid").children)
        labels = [str(widget.render()) for widget in grid[0::2]]
        assert all(isinstance(widget, Label) for widget in grid[0::2]) and labels == [
            "prompt",
            "engine",
            "variant",
            "seed",
        ]
        assert [widget.id for widget in grid[1::2]] == [
            "submit-prompt",
            "submit-engine",
            "submit-variant",
            "submit-seed",
        ]
        screen.query_one("#submit-variant").value = "bi"  # 4 latents are not a bi length
        screen.query_one("#submit-engine").value = "native"
        screen.query_one("#submit-prompt").value = "a quiet street at dusk"
        screen.query_one("#submit-seed").value = "7"
        await pilot.press("enter")
        status = screen.query_one("#submit-status")
        await settle(pilot, lambda: "multiple of 16" in str(status.render()))
        assert redis_conn.zcard("worldplay:jobs") == 0
        screen.query_one("#submit-variant").value = "ar"
        await pilot.click("#submit-go")
        await settle(pilot, lambda: "queued job" in str(status.render()))
        # No worker serves the queue: the user is told, with the command that starts one.
        warning = f"no live worker serves queue '{settings.queue.default_queue}'"
        assert any(warning in n.message and "worldplay worker" in n.message for n in app._notifications)
        await pilot.press("escape")
        assert isinstance(app.screen, EditorScreen)
        trajectory = app.state.trajectory()
    (job_id,) = app.job_ids
    job = fetch_job(redis_conn, job_id)
    spec = JobSpec.model_validate(job.args[0])
    assert (spec.prompt, spec.engine, spec.variant, spec.seed, spec.frames) == (
        "a quiet street at dusk",
        "native",
        "ar",
        7,
        13,
    )
    assert spec.trajectory.source == "w+right-3"
    assert load_trajectory(settings.output_root / job_id / "trajectory.json") == trajectory


async def test_without_a_known_default_the_engine_is_the_settings_default(submitter, redis_conn):
    submit, settings = submitter
    app = EditorApp(EditorState(), submitter=submit)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "w", "ctrl+g")
        screen = app.screen
        engine = screen.query_one("#submit-engine")
        assert screen.form().engine is None and engine.is_blank() and engine.prompt == "settings default"
        await pilot.click("#submit-go")
        await settle(pilot, lambda: "queued job" in str(screen.query_one("#submit-status").render()))
    (job_id,) = [member.decode() for member in redis_conn.zrange("worldplay:jobs", 0, -1)]
    assert JobSpec.model_validate(fetch_job(redis_conn, job_id).args[0]).engine == settings.default_engine


def test_unsaved_imported_paths_go_through_a_file(submitter, redis_conn, tmp_path):
    submit, settings = submitter
    trajectory = load_trajectory(_rolled(tmp_path))
    submitted = submit(trajectory, SubmitForm(prompt="", variant="ar"), None)
    spec = JobSpec.model_validate(fetch_job(redis_conn, submitted.job_id).args[0])
    assert spec.trajectory.source == UNSAVED_SOURCE and spec.trajectory.num_latents == 4
    assert load_trajectory(settings.output_root / submitted.job_id / "trajectory.json") == trajectory
    assert document_from_trajectory(trajectory).has_imported


def _rolled(tmp_path):
    import numpy as np

    from trajectories import parse_pose_string
    from trajectories.geometry import rot_z

    c2w = parse_pose_string("w-3").c2w.copy()
    c2w[1:, :3, :3] = c2w[1:, :3, :3] @ rot_z(0.2)
    path = tmp_path / "rolled.json"
    save_trajectory(Trajectory(np.array(c2w)), path)
    return path
