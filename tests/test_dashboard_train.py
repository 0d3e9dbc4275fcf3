"""The dashboard's job detail for train jobs: loss curve and training numbers, against a real redis-server.

Train jobs are enqueued the way `worldplay train --queue` does (`contract.queue.enqueue`: rq, JSON serializer) and
one is marked running with rq's own execution primitives; its `train` meta is written the way the
training task writes it, so the dashboard reads it through the shared jobs read model.
"""

from __future__ import annotations

import pytest

from tui_util import settle
from worldplay_cli.contract.settings import load_settings
from worldplay_cli.contract.specs import Progress


@pytest.fixture
def settings(tmp_path, redis_url):
    env = {
        "WORLDPLAY_HOME": str(tmp_path / "home"),
        "WORLDPLAY_CONFIG": str(tmp_path / "config.toml"),
        "WORLDPLAY_REDIS_URL": redis_url,
        "WORLDPLAY_OUTPUT_ROOT": str(tmp_path / "outputs"),
    }
    settings = load_settings(environ=env, config_path=tmp_path / "config.toml")
    (tmp_path / "outputs").mkdir()
    return settings


def enqueue_train_job(conn, settings, job_id: str, max_steps: int = 400) -> None:
    from worldplay_cli.contract.queue import enqueue
    from worldplay_cli.contract.training import TrainConfig, TrainJobSpec

    config = TrainConfig(
        model={"model_dir": "/models/tiny"},
        data={"path": "/data/synthetic-rooms"},
        max_steps=max_steps,
        checkpoint={"output_dir": "unused"},
    )
    enqueue(conn, settings, TrainJobSpec(config=config), job_id, "train")


def start_with_meta(conn, job_id: str, train: dict, step: int, total: int) -> None:
    """Take the job off its queue, mark it running as an rq worker does, and write its train meta."""
    from rq.executions import Execution

    from worldplay_cli.contract.queue import fetch_job, rq_queue

    job = fetch_job(conn, job_id)
    rq_queue(conn, job.origin).remove(job)
    with conn.pipeline() as pipe:
        job.prepare_for_execution("gpu-box.7.gpu0", pipe)
        Execution.create(job, ttl=3600, pipeline=pipe, worker_name="gpu-box.7.gpu0")
        pipe.execute()
    job.meta["progress"] = Progress(
        stage="train", step=step, total=total, fraction=step / total, eta_s=train["eta_s"]
    ).model_dump()
    job.meta["train"] = train
    job.save_meta()


def falling_history(steps: range) -> list[list[float]]:
    return [[step, round(2.0 / (1 + step / 20), 6)] for step in steps]


def dashboard(redis_url, settings):
    from worldplay_cli.tui.dashboard import Dashboard, RedisSource

    return Dashboard(source=RedisSource(redis_url, settings, nvml=False), refresh_s=0.2)


async def open_detail(pilot, app, job_id: str):
    from worldplay_cli.tui.dashboard.screens import JobDetailScreen
    from worldplay_cli.tui.dashboard.widgets import JobsTable

    await settle(pilot, lambda: app.snapshot is not None)
    app.query_one("#filter").value = job_id
    await settle(pilot, lambda: list(app.query_one(JobsTable)._order) == [job_id], what=f"only {job_id} listed")
    await pilot.press("enter")
    await settle(
        pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.detail is not None, what="detail"
    )
    return app.screen


def rendered(widget) -> str:
    """What a Static shows, as plain text."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=48, color_system=None)
    console.print(widget.content)
    return console.file.getvalue()


async def test_a_running_train_job_shows_its_loss_curve_and_numbers_and_follows_them(redis_url, redis_conn, settings):
    from textual.widgets import Sparkline, Static

    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.tui.dashboard.widgets import LossCurve

    job_id = "20260101-130000-train1"
    enqueue_train_job(redis_conn, settings, job_id)
    history = falling_history(range(1, 121))
    train = {
        "step": 120,
        "max_steps": 400,
        "loss": history[-1][1],
        "lr": 1e-4,
        "samples_per_s": 3.25,
        "eta_s": 86.0,
        "loss_history": history,
        "validation": {"step": 100, "psnr": 21.5, "action_following": 0.62},
    }
    start_with_meta(redis_conn, job_id, train, 120, 400)

    app = dashboard(redis_url, settings)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, job_id)
        assert screen.detail.row.kind == "train" and screen.detail.train["loss_history"] == history
        assert screen.query_one("#detail-train").display
        assert not any(widget.display for widget in screen.query(".generate-only"))  # no trajectory, no frame
        curve = screen.query_one(LossCurve)
        assert curve.points == [(step, loss) for step, loss in history]
        assert list(screen.query_one("#loss-sparkline", Sparkline).data) == [loss for _, loss in history]
        assert screen.query_one("#loss-sparkline", Sparkline).size.height == 8
        summary = rendered(screen.query_one("#loss-range", Static))
        assert (
            f"last {history[-1][1]:.4g}" in summary
            and f"min {history[-1][1]:.4g}" in summary
            and "max 1.905" in summary
        )
        axis = rendered(screen.query_one("#loss-steps", Static))
        assert axis.split() == ["step", "1", "step", "120"]
        stats = rendered(screen.query_one("#detail-train-stats", Static))
        assert "120 / 400 (30%)" in stats and "1.000e-04" in stats and "3.25 samples/s" in stats
        assert "1m26s" in rendered(screen.query_one("#detail-summary", Static))  # the progress ETA
        assert "psnr 21.5" in stats and "action_following 0.62" in stats and "validation  step 100" in stats

        # The worker keeps reporting: the open screen follows the new steps on its next refresh.
        job = fetch_job(redis_conn, job_id)
        longer = falling_history(range(1, 201))
        job.meta["train"] = {**train, "step": 200, "loss": longer[-1][1], "eta_s": 60.0, "loss_history": longer}
        job.save_meta()
        await settle(pilot, lambda: len(curve.points) == 200, what="the curve to grow")
        assert rendered(screen.query_one("#loss-steps", Static)).split() == ["step", "1", "step", "200"]
        await settle(pilot, lambda: "200 / 400 (50%)" in rendered(screen.query_one("#detail-train-stats", Static)))


async def test_a_distillation_job_shows_the_student_and_critic_losses_side_by_side(redis_url, redis_conn, settings):
    from textual.widgets import Label, Sparkline, Static

    from worldplay_cli.tui.dashboard.widgets import LossCurve

    job_id = "20260101-130050-distil"
    enqueue_train_job(redis_conn, settings, job_id)
    critic = falling_history(range(1, 41))
    # the student updates every other iteration; the worker records its last update's loss each step
    student = [[step, round(0.5 - step / 200, 6)] for step in range(1, 41)]
    train = {
        "step": 40,
        "max_steps": 400,
        "loss": critic[-1][1],
        "lr": 2e-4,
        "critic_lr": 4e-4,
        "samples_per_s": 1.0,
        "eta_s": 360.0,
        "loss_history": critic,
        "generator_loss": student[-1][1],
        "generator_loss_history": student,
    }
    start_with_meta(redis_conn, job_id, train, 40, 400)
    app = dashboard(redis_url, settings)
    async with app.run_test(size=(200, 70)) as pilot:
        screen = await open_detail(pilot, app, job_id)
        critic_curve = screen.query_one("#detail-loss", LossCurve)
        student_curve = screen.query_one("#detail-student-loss", LossCurve)
        assert critic_curve.points == [tuple(point) for point in critic]
        assert student_curve.points == [tuple(point) for point in student]
        assert student_curve.display and all(widget.display for widget in screen.query(".distill-only"))
        assert list(student_curve.query_one(Sparkline).data) == [loss for _, loss in student]
        assert str(screen.query_one("#detail-loss-label", Label).content) == "critic loss"
        assert "last 0.3" in rendered(student_curve.query_one("#loss-range", Static))
        stats = rendered(screen.query_one("#detail-train-stats", Static))
        assert "student loss  0.3" in stats and f"critic loss   {critic[-1][1]:.4g}" in stats, stats
        assert "student lr    2.000e-04" in stats and "critic lr     4.000e-04" in stats, stats


async def test_a_train_job_without_history_shows_a_placeholder(redis_url, redis_conn, settings):
    from textual.widgets import Sparkline, Static

    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.tui.dashboard.widgets import LossCurve

    job_id = "20260101-130100-train2"
    enqueue_train_job(redis_conn, settings, job_id)
    app = dashboard(redis_url, settings)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, job_id)
        assert screen.detail.row.status == "queued" and screen.detail.train is None
        assert screen.query_one(LossCurve).points == []
        assert not any(widget.display for widget in screen.query(".distill-only"))  # one loss: no student curve
        assert "no loss reported yet" in rendered(screen.query_one("#loss-range", Static))
        assert not screen.query_one("#loss-sparkline", Sparkline).display
        assert "no step reported yet" in rendered(screen.query_one("#detail-train-stats", Static))

        # A diverged step (NaN) is left out of the curve rather than flattening it.
        job = fetch_job(redis_conn, job_id)
        job.meta["train"] = {
            "step": 3,
            "max_steps": 400,
            "loss": 1.0,
            "loss_history": [[1, float("nan")], [2, 1.5], [3, 1.0]],
        }
        job.save_meta()
        await settle(pilot, lambda: screen.query_one(LossCurve).points == [(2, 1.5), (3, 1.0)], what="the curve")
        assert screen.query_one("#loss-sparkline", Sparkline).display


def test_job_detail_carries_the_train_meta(redis_conn, settings):
    from worldplay_cli.jobs import job_detail

    job_id = "20260101-130200-train3"
    enqueue_train_job(redis_conn, settings, job_id)
    assert job_detail(redis_conn, settings, job_id)["train"] is None
    train = {
        "step": 5,
        "max_steps": 400,
        "loss": 1.2,
        "lr": 1e-4,
        "samples_per_s": 1.0,
        "eta_s": 10.0,
        "loss_history": [[1, 1.5], [5, 1.2]],
    }
    start_with_meta(redis_conn, job_id, train, 5, 400)
    assert job_detail(redis_conn, settings, job_id)["train"] == train
