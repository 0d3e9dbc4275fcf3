"""`worldplay dashboard` against a real redis-server, with jobs a real worker ran plus synthetic states.

The world (module scope, database 0 of the session server): two preview jobs a real burst worker
finished, one it failed (its input was removed: bad input), one queued, one "started" with progress
(made with rq's own execution primitives, as a worker would), one lost by its "worker" and failed by the
real reaper, one canceled through the read model, one deferred and one scheduled. Tests that act on jobs
make their own fresh ones, so the world stays as described.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from spine_util import wait_until
from tui_util import settle
from worldplay_cli.contract.settings import load_settings
from worldplay_cli.contract.specs import JOBS_INDEX, TASK_NOOP, Failure, Progress

SMALL = {"pose": "w-3", "width": 64, "height": 32}
STARTED_WORKER = "gpu-box.4242.gpu0"
BURST_WORKER = "cpu-box.1"
# Fixed ids and (below) fixed times, so snapshots of the world are the same on every run.
WORLD_IDS = {
    name: f"20260101-1200{minute:02d}-{name[:6]:0>6}"
    for minute, name in enumerate(
        ("finished", "finished2", "failed", "queued", "started", "lost", "canceled", "deferred", "scheduled")
    )
}
PINNED_START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
PINNED_NOW = PINNED_START + 3600


@dataclass
class World:
    url: str
    env: dict[str, str]
    settings: object
    conn: redis.Redis
    ids: dict[str, str] = field(default_factory=dict)


def submit_preview(
    world: World, prompt: str, queue: str = "generate", job_id: str | None = None, retries: int | None = None, **changes
) -> str:
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.submit import GenerateRequest, prepare, submit

    prepared = prepare(GenerateRequest(prompt=prompt, **{**SMALL, **changes}), world.settings)
    job_id = job_id or new_job_id()
    submit(world.conn, world.settings, prepared, queue, job_id, retries_on_lost=retries)
    return job_id


def make_started(world: World, job_id: str, progress: Progress, ttl: int = 3600) -> None:
    """Take a queued job off its queue and mark it running the way an rq worker does."""
    from rq.executions import Execution

    from worldplay_cli.contract.queue import fetch_job, rq_queue

    job = fetch_job(world.conn, job_id)
    rq_queue(world.conn, job.origin).remove(job)
    with world.conn.pipeline() as pipe:
        job.prepare_for_execution(STARTED_WORKER, pipe)
        Execution.create(job, ttl=ttl, pipeline=pipe, worker_name=STARTED_WORKER)
        pipe.execute()
    job.meta["progress"] = progress.model_dump()
    job.save_meta()


def pin_times(conn: redis.Redis, job_ids: list[str]) -> None:
    """Give the jobs fixed enqueue/start/end times (one minute apart; runs of 5, 6, 7... seconds)."""

    def stamp(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    for index, job_id in enumerate(job_ids):
        key = f"rq:job:{job_id}"
        created = PINNED_START + 60 * index
        fields = {"created_at": stamp(created), "enqueued_at": stamp(created)}
        started, ended = conn.hmget(key, ["started_at", "ended_at"])
        if started:
            fields["started_at"] = stamp(created + 10)
        if ended:
            fields["ended_at"] = stamp(created + 15 + index)
        conn.hset(key, mapping=fields)


def run_burst_worker(world: World, queue: str = "generate") -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--queue", queue, "--burst", "--name", BURST_WORKER],
        env={**os.environ, **world.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def world(redis_server, tmp_path_factory) -> World:
    from worldplay_cli.contract.queue import reap, rq_queue
    from worldplay_cli.jobs import cancel_job

    home = tmp_path_factory.mktemp("dashboard")
    url = redis_server(0)
    env = {
        "WORLDPLAY_HOME": str(home / "home"),
        "WORLDPLAY_CONFIG": str(home / "config.toml"),
        "WORLDPLAY_REDIS_URL": url,
        "WORLDPLAY_OUTPUT_ROOT": str(home / "outputs"),
        "WORLDPLAY_WORKER__HEARTBEAT_S": "1",
        "WORLDPLAY_WORKER__LOST_AFTER_S": "3",
        "WORLDPLAY_WORKER__REAPER_INTERVAL_S": "1",
        "WORLDPLAY_QUEUE__RETRIES_ON_LOST_WORKER": "0",
    }
    settings = load_settings(environ=env, config_path=home / "config.toml")
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    world = World(url, env, settings, conn)
    Path(settings.output_root).mkdir(parents=True)
    ids = world.ids

    ids["finished"] = submit_preview(world, "a quiet harbour at dawn, boats rocking", job_id=WORLD_IDS["finished"])
    ids["finished2"] = submit_preview(world, "neon city street in the rain", job_id=WORLD_IDS["finished2"], pose="d-3")
    ids["failed"] = submit_preview(world, "this one loses its input image", job_id=WORLD_IDS["failed"])
    (Path(settings.output_root) / ids["failed"] / "input.png").unlink()
    run_burst_worker(world)

    ids["queued"] = submit_preview(world, "a castle on a hill, waiting its turn", job_id=WORLD_IDS["queued"])
    ids["started"] = submit_preview(world, "forest path in autumn, rendering now", job_id=WORLD_IDS["started"])
    make_started(
        world,
        ids["started"],
        Progress(stage="render", step=6, total=13, chunk=1, num_chunks=2, fraction=0.45, eta_s=12.0),
    )
    ids["lost"] = submit_preview(world, "desert road whose worker vanished", job_id=WORLD_IDS["lost"])
    # Its "worker" never heartbeats: the entry expires after 1 s and the real reaper fails the job.
    make_started(world, ids["lost"], Progress(stage="render", fraction=0.2), ttl=1)
    wait_until(lambda: reap(conn, settings, force=True), 15, what="the reaper to fail the lost job")
    ids["canceled"] = submit_preview(world, "snowy mountain, canceled before it ran", job_id=WORLD_IDS["canceled"])
    cancel_job(conn, settings, ids["canceled"])
    noop_queue = rq_queue(conn, "generate")
    ids["deferred"] = noop_queue.enqueue(TASK_NOOP, depends_on=ids["queued"], job_id=WORLD_IDS["deferred"]).id
    later = datetime.now(timezone.utc) + timedelta(days=1)
    ids["scheduled"] = noop_queue.enqueue_at(later, TASK_NOOP, job_id=WORLD_IDS["scheduled"]).id
    pin_times(conn, list(WORLD_IDS.values()))
    yield world
    conn.close()


def _statuses(world: World) -> dict[str, str]:
    from worldplay_cli.jobs import get_row

    return {name: get_row(world.conn, job_id).status for name, job_id in world.ids.items()}


def test_the_world_has_every_state(world):
    from worldplay_cli.jobs import get_row

    failures = {name: get_row(world.conn, job_id).failure for name, job_id in world.ids.items()}
    assert _statuses(world) == {
        "finished": "finished",
        "finished2": "finished",
        "failed": "failed",
        "queued": "queued",
        "started": "started",
        "lost": "failed",
        "canceled": "canceled",
        "deferred": "deferred",
        "scheduled": "scheduled",
    }, failures


# --- the app --------------------------------------------------------------------------------------------


def dashboard(world: World, **kwargs):
    from worldplay_cli.tui.dashboard import Dashboard, RedisSource

    return Dashboard(source=RedisSource(world.url, world.settings, nvml=False), refresh_s=0.2, **kwargs)


def table_ids(app) -> list[str]:
    from worldplay_cli.tui.dashboard.widgets import JobsTable

    return list(app.query_one(JobsTable)._order)


async def test_the_table_lists_jobs_in_every_state_with_counts(world):
    from worldplay_cli.tui.dashboard.widgets import JobsTable

    app = dashboard(world)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        assert set(table_ids(app)) == set(world.ids.values())
        counts = app.snapshot.page.counts
        assert counts["queued"] == 1 and counts["started"] == 1 and counts["canceled"] == 1
        assert counts["deferred"] == 1 and counts["scheduled"] == 1
        table = app.query_one(JobsTable)
        progress = str(table.get_cell(world.ids["started"], "progress"))
        assert "45%" in progress and "render 6/13" in progress and "chunk 1/2" in progress
        assert str(table.get_cell(world.ids["started"], "eta")) == "12s"
        assert str(table.get_cell(world.ids["lost"], "progress")) == "worker lost"
        assert str(table.get_cell(world.ids["started"], "worker")) == STARTED_WORKER


async def test_sorting_by_keys_and_by_clicking_headers(world):
    from worldplay_cli.tui.dashboard.widgets import JobsTable

    app = dashboard(world)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        # Newest first by default (the world's jobs were enqueued one minute apart, in WORLD_IDS order).
        assert table_ids(app) == list(reversed(WORLD_IDS.values()))
        await pilot.press("s")  # created is the last column: `s` wraps to the first, id (ascending)
        await settle(pilot, lambda: app.job_query.sort == "id" and table_ids(app) == sorted(WORLD_IDS.values()))
        await pilot.press("S")
        await settle(pilot, lambda: table_ids(app) == sorted(WORLD_IDS.values(), reverse=True), what="reversed")
        # Click the "Status" header: sorted by status (queued, deferred, scheduled, started, finished, ...).
        table = app.query_one(JobsTable)
        keys = [str(key.value) for key in table.columns]
        x = sum(column.get_render_width(table) for column in list(table.columns.values())[: keys.index("status")]) + 2
        await pilot.click(JobsTable, offset=(x, 0))
        await settle(pilot, lambda: app.job_query.sort == "status", what="sort by status")
        await settle(
            pilot, lambda: table_ids(app)[:3] == [WORLD_IDS["queued"], WORLD_IDS["deferred"], WORLD_IDS["scheduled"]]
        )
        await pilot.click(JobsTable, offset=(x, 0))
        await settle(pilot, lambda: app.job_query.descending and table_ids(app)[0] == WORLD_IDS["canceled"])
        # Duration: finished jobs ran 15+i seconds (pinned), the lost one has no end; longest first.
        app.sort_by("duration")
        await settle(pilot, lambda: app.job_query.sort == "duration" and table_ids(app)[0] == WORLD_IDS["started"])


async def test_filtering_by_status_kind_and_text(world):
    app = dashboard(world)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        await pilot.press("f")
        await settle(pilot, lambda: table_ids(app) == [WORLD_IDS["queued"]], what="queued only")
        await pilot.press("f", "f", "f")
        await settle(pilot, lambda: table_ids(app) == [WORLD_IDS["started"]], what="started only")
        await pilot.press("f", "f")
        await settle(pilot, lambda: set(table_ids(app)) == {WORLD_IDS["failed"], WORLD_IDS["lost"]}, what="failed only")
        for _ in range(3):  # ... stopped, canceled, then back to every status
            await pilot.press("f")
        await settle(pilot, lambda: len(table_ids(app)) == len(WORLD_IDS), what="all again")
        await pilot.press("k")  # the first kind: generate (the two noop jobs have no kind)
        await settle(pilot, lambda: app.job_query.kinds == {"generate"} and len(table_ids(app)) == 7)
        await pilot.press("k")
        await pilot.press("slash")
        assert app.focused.id == "filter"
        await pilot.press(*"HARBOUR")
        await settle(pilot, lambda: table_ids(app) == [WORLD_IDS["finished"]], what="text filter")
        await pilot.press("escape")
        assert app.focused.id == "jobs"
        app.query_one("#filter").value = "no heartbeat"  # failure messages are searchable too
        await settle(pilot, lambda: table_ids(app) == [WORLD_IDS["lost"]], what="failure text")


async def test_pages_of_a_long_listing(world):
    app = dashboard(world, page_size=4)
    newest_first = list(reversed(WORLD_IDS.values()))
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == newest_first[:4])
        await pilot.press("right_square_bracket")
        await settle(pilot, lambda: table_ids(app) == newest_first[4:8], what="page 2")
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot, lambda: table_ids(app) == newest_first[8:], what="the last page")
        assert app.job_query.offset == 8
        await pilot.press("left_square_bracket")
        await settle(pilot, lambda: table_ids(app) == newest_first[4:8], what="back to page 2")


async def open_detail(pilot, app, job_id: str):
    from worldplay_cli.tui.dashboard.screens import JobDetailScreen

    await settle(pilot, lambda: app.snapshot is not None)
    app.query_one("#filter").value = job_id
    await settle(pilot, lambda: table_ids(app) == [job_id], what=f"only {job_id} listed")
    await pilot.press("enter")
    await settle(
        pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.detail is not None, what="detail"
    )
    return app.screen


def static_text(screen, selector: str) -> str:
    import io

    from rich.console import Console
    from textual.widgets import Static

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(screen.query_one(selector, Static).content)
    return console.file.getvalue()


def log_text(screen) -> str:
    from textual.widgets import RichLog

    return "\n".join(strip.text for strip in screen.query_one(RichLog).lines)


async def test_detail_of_a_finished_job(world):
    from worldplay_cli.tui.widgets import HalfBlockImage

    app = dashboard(world)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, world.ids["finished"])
        detail = screen.detail
        assert detail.spec["prompt"] == "a quiet harbour at dawn, boats rocking"
        assert detail.video and detail.video.endswith("video.mp4")
        assert "video.mp4" in static_text(screen, "#detail-outputs") and "manifest.json" in detail.files
        assert "render" in static_text(screen, "#detail-timings")
        plot = static_text(screen, "#detail-plot")
        assert "o" in plot and "↑" in plot  # start marker and final heading of a forward walk
        await settle(pilot, lambda: screen.query_one("#detail-frame", HalfBlockImage)._strips, what="the first frame")
        assert "finished" in log_text(screen)
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


async def test_detail_of_failed_jobs_shows_the_classified_reason_and_hint(world):
    app = dashboard(world)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, world.ids["failed"])
        failure = static_text(screen, "#detail-failure")
        assert failure.startswith("bad input: ") and "input.png" in failure
        assert "hint: re-submit" in failure
        await pilot.press("escape")
        screen = await open_detail(pilot, app, world.ids["lost"])
        failure = static_text(screen, "#detail-failure")
        assert failure.startswith("worker lost: ") and "hint: check the worker host" in failure


async def test_the_log_follows_the_redis_stream(world):
    from worldplay_cli.contract.queue import append_log

    app = dashboard(world)
    job_id = world.ids["started"]
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, job_id)
        for index in range(3):
            append_log(world.conn, world.settings, job_id, f"decoded chunk {index}")
            await settle(pilot, lambda: f"decoded chunk {index}" in log_text(screen), what=f"log line {index}")
        assert log_text(screen).count("decoded chunk 0") == 1


# --- actions (each test on its own, freshly emptied database) -------------------------------------------


@pytest.fixture
def fresh(redis_url, worldplay_env) -> World:
    settings = load_settings()
    Path(settings.output_root).mkdir(parents=True)
    conn = redis.Redis.from_url(redis_url)
    yield World(redis_url, worldplay_env, settings, conn)
    conn.close()


def status_of(world: World, job_id: str) -> str | None:
    from worldplay_cli.contract.queue import fetch_job

    job = fetch_job(world.conn, job_id)
    return job.get_status().value if job is not None else None


async def test_cancel_asks_first_then_cancels(fresh):
    from worldplay_cli.tui.dashboard.screens import ConfirmScreen

    job_id = submit_preview(fresh, "to be canceled")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id])
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")
        await settle(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="the dialog to close")
        assert status_of(fresh, job_id) == "queued"
        await pilot.press("c", "y")
        await settle(pilot, lambda: status_of(fresh, job_id) == "canceled", what="the job to be canceled")
        await settle(pilot, lambda: app.snapshot.page.counts["canceled"] == 1, what="the table to show it")


async def test_retry_puts_a_failed_job_back_on_its_queue(fresh):
    from worldplay_cli.contract.queue import reap

    job_id = submit_preview(fresh, "to be retried", queue="retry", retries=0)
    make_started(fresh, job_id, Progress(stage="render"), ttl=1)
    wait_until(lambda: reap(fresh.conn, fresh.settings, force=True), 15, what="the reaper to fail the job")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id] and app.snapshot.page.counts["failed"] == 1)
        await pilot.press("r")
        await settle(pilot, lambda: status_of(fresh, job_id) == "queued", what="the job to be re-queued")
        await settle(pilot, lambda: app.snapshot.page.counts["queued"] == 1, what="the table to show it")
        await pilot.press("r")  # a queued job cannot be retried: one error notification, nothing changes
        await settle(pilot, lambda: any("only failed" in n.message for n in app._notifications), what="the error")
        assert status_of(fresh, job_id) == "queued"


async def test_requeue_with_edits_submits_a_changed_copy(fresh):
    from textual.widgets import Input

    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.tui.dashboard.screens import RequeueScreen

    job_id = submit_preview(fresh, "the original prompt", seed=7)
    app = dashboard(fresh)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id])
        await pilot.press("e")
        await settle(pilot, lambda: isinstance(app.screen, RequeueScreen), what="the form")
        form = app.screen
        assert form.query_one("#field-seed", Input).value == "7"
        form.query_one("#field-prompt", Input).value = "the edited prompt"
        form.query_one("#field-seed", Input).value = "8"
        form.query_one("#field-queue", Input).value = "other"
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: fresh.conn.zcard(JOBS_INDEX) == 2, what="the new job")
    new_id = next(member.decode() for member in fresh.conn.zrange(JOBS_INDEX, 0, -1) if member.decode() != job_id)
    new_job = fetch_job(fresh.conn, new_id)
    assert new_job.origin == "other" and new_job.get_status().value == "queued"
    assert new_job.args[0]["prompt"] == "the edited prompt" and new_job.args[0]["seed"] == 8
    assert (Path(fresh.settings.output_root) / new_id / "input.png").is_file()
    original = fetch_job(fresh.conn, job_id).args[0]
    assert original["prompt"] == "the original prompt" and original["seed"] == 7


async def test_delete_asks_first_and_forgets_the_job(fresh):
    job_id = submit_preview(fresh, "to be deleted")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id])
        await pilot.press("x", "y")
        await settle(pilot, lambda: status_of(fresh, job_id) is None, what="the job to be deleted")
        await settle(pilot, lambda: table_ids(app) == [], what="the table to drop it")
    assert (Path(fresh.settings.output_root) / job_id).is_dir()  # outputs are kept


async def test_suspend_and_resume_workers(fresh):
    from rq.suspension import WORKERS_SUSPENDED

    from worldplay_cli.tui.dashboard.widgets import StatusLine

    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        await pilot.press("p")
        await settle(pilot, lambda: fresh.conn.exists(WORKERS_SUSPENDED), what="suspension")
        await settle(pilot, lambda: "WORKERS SUSPENDED" in str(app.query_one(StatusLine).render()), what="the flag")
        await pilot.press("p")
        await settle(pilot, lambda: not fresh.conn.exists(WORKERS_SUSPENDED), what="resumption")


async def test_submit_a_job_from_a_spec_file(fresh, tmp_path):
    import json

    from worldplay_cli.tui.dashboard.screens import SubmitScreen

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"prompt": "from a file", "queue": "files", **SMALL}))
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit form")
        app.screen.query_one("#path").value = str(request)
        app.screen.query_one("#path").focus()
        await pilot.press("enter")
        await settle(pilot, lambda: len(table_ids(app)) == 1, what="the submitted job")
        job_id = table_ids(app)[0]
        assert status_of(fresh, job_id) == "queued"
        assert app.snapshot.page.rows[0].queue == "files" and app.snapshot.page.rows[0].prompt == "from a file"
        request.write_text(json.dumps({"prompt": "x", "warp": 9}))
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, SubmitScreen))
        form = app.screen
        form.query_one("#path").value = str(request)
        form.query_one("#path").focus()
        await pilot.press("enter")
        await settle(
            pilot, lambda: "unknown field 'warp'" in str(form.query_one("#submit-error").render()), what="the error"
        )
        assert app.screen is form  # the form stays open with the error


async def test_the_cursor_follows_the_highlighted_job_when_rows_move(fresh):
    from worldplay_cli.tui.dashboard.screens import ConfirmScreen

    ids = enqueue_noops(fresh, 3)
    # Not the first by id whatever ids come later: a cursor that kept its row would land elsewhere.
    chosen = sorted(ids)[-1]
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        await pilot.press(*["down"] * table_ids(app).index(chosen))
        assert app.selected_job_id == chosen
        newer = enqueue_noops(fresh, 2)  # newest first: both land above the chosen job
        await settle(pilot, lambda: len(table_ids(app)) == 5, what="the new jobs")
        assert app.selected_job_id == chosen
        await pilot.press("s")  # sorted by id now: every row may move
        await settle(
            pilot, lambda: app.job_query.sort == "id" and table_ids(app) == sorted(ids + newer), what="sort by id"
        )
        assert app.selected_job_id == chosen
        app.query_one("#filter").value = "matches-no-job"
        await settle(pilot, lambda: table_ids(app) == [], what="an empty listing")
        app.query_one("#filter").value = ""
        await settle(pilot, lambda: len(table_ids(app)) == 5, what="the jobs again")
        assert app.selected_job_id == chosen
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert chosen in app.screen.question
        await pilot.press("y")
        await settle(pilot, lambda: status_of(fresh, chosen) == "canceled", what="the chosen job to be canceled")
        # Only queued jobs now: the canceled one leaves the view and the cursor keeps its row.
        row = app.jobs_table.cursor_row
        await pilot.press("f")
        await settle(pilot, lambda: len(table_ids(app)) == 4, what="queued jobs only")
        assert app.jobs_table.cursor_row == min(row, 3)
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert app.selected_job_id in app.screen.question
        await pilot.press("n")
    assert [status_of(fresh, job_id) for job_id in ids + newer if job_id != chosen] == ["queued"] * 4


async def test_home_and_end_move_to_the_first_and_last_job(fresh):
    ids = enqueue_noops(fresh, 5)
    newest_first = ids[::-1]
    app = dashboard(fresh, page_size=2)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == newest_first[:2])
        await pilot.press("end")  # the last job of the whole listing, on the last page
        await settle(pilot, lambda: table_ids(app) == newest_first[4:], what="the last page")
        assert app.selected_job_id == newest_first[-1]
        await pilot.press("left_square_bracket")
        await settle(pilot, lambda: table_ids(app) == newest_first[2:4], what="the page before")
        await pilot.press("end")  # from another page too
        await settle(pilot, lambda: table_ids(app) == newest_first[4:], what="the last page again")
        assert app.selected_job_id == newest_first[-1]
        await pilot.press("home")
        await settle(pilot, lambda: table_ids(app) == newest_first[:2], what="the first page")
        assert app.selected_job_id == newest_first[0]
        await pilot.press("down", "home")  # on the first page: just the first row
        assert app.selected_job_id == newest_first[0]
        await pilot.press("question_mark")
        assert "| `home` | First job |" in app.screen.markdown and "| `end` | Last job |" in app.screen.markdown


@pytest.mark.parametrize("width", [80, 160])
async def test_columns_fit_the_terminal_width(world, width):
    from worldplay_cli.tui.dashboard.widgets import JobsTable

    app = dashboard(world)
    async with app.run_test(size=(width, 40)) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == len(WORLD_IDS))
        table = app.query_one(JobsTable)
        shown = [str(key.value) for key in table.columns]
        assert sum(column.get_render_width(table) for column in table.columns.values()) <= table.size.width
        await pilot.pause()
        assert table.max_scroll_x == 0  # nothing hides off to the right
        screen = "\n".join(table.render_line(y).text for y in range(table.size.height))
        for job_id in WORLD_IDS.values():  # the whole id, on screen
            assert job_id in screen
        assert {"id", "status", "progress"} <= set(shown)
        if width == 80:
            assert "created" not in shown and "worker" not in shown
        else:
            assert {"prompt", "engine", "worker", "created", "duration"} <= set(shown)
            assert "a quiet harbour at dawn" in screen


def test_a_named_jobs_whole_base_id_fits_at_80_columns():
    from worldplay_cli.contract.specs import new_job_id
    from worldplay_cli.tui.dashboard.widgets import fit_columns

    base, named = new_job_id(), new_job_id("x" * 40)
    assert {column.key: width for column, width in fit_columns(78)}["id"] == len(base)
    assert {column.key: width for column, width in fit_columns(78, len(named))}["id"] > len(base)  # base id, "…"
    assert {column.key: width for column, width in fit_columns(200, len(named))}["id"] == len(named)


def submit_form_values(form, **values) -> None:
    for name, value in values.items():
        form.query_one(f"#submit-{name}").value = value


async def test_submit_form_enqueues_a_job_with_the_values_entered(fresh):
    from worldplay_cli.contract.queue import fetch_job
    from worldplay_cli.contract.specs import JobSpec
    from worldplay_cli.tui.dashboard.screens import SubmitScreen

    app = dashboard(fresh)
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit form")
        form = app.screen
        assert form.query_one("#submit-engine").value == fresh.settings.default_engine
        assert form.query_one("#submit-variant").value == fresh.settings.default_variant
        await pilot.press(*"a lighthouse in fog")  # the prompt has the focus
        submit_form_values(
            form, image="city", pose="w-3, jump-2", engine="native", variant="ar", seed="42", queue="formq"
        )
        await pilot.press("ctrl+s")
        error = form.query_one("#submit-error")
        await settle(pilot, lambda: "unknown action 'jump'" in str(error.render()), what="the pose error")
        assert app.screen is form and fresh.conn.zcard(JOBS_INDEX) == 0
        assert not any(Path(fresh.settings.output_root).iterdir())
        submit_form_values(form, pose="w-3")
        await pilot.press("enter")
        await settle(pilot, lambda: not isinstance(app.screen, SubmitScreen), what="the form to close")
        await settle(pilot, lambda: len(table_ids(app)) == 1, what="the job in the table")
        messages = [notification.message for notification in app._notifications]
        (job_id,) = table_ids(app)
    job = fetch_job(fresh.conn, job_id)
    spec = JobSpec.model_validate(job.args[0])
    assert job.origin == "formq" and job.get_status().value == "queued"
    assert (spec.prompt, spec.engine, spec.variant, spec.seed) == ("a lighthouse in fog", "native", "ar", 42)
    assert spec.trajectory.source == "w-3" and spec.image.source.endswith("example_city.png")
    assert f"submitted {job_id} on queue formq" in messages
    # Nobody serves the queue: the user is told, with the command that starts a worker for it.
    assert any("no live worker serves queue 'formq'" in m and "worldplay worker --queue formq" in m for m in messages)


@pytest.mark.slow
async def test_a_canceled_job_is_not_a_worker_failure(fresh, engines_env, start_worker):
    from worldplay_cli.jobs import list_workers
    from worldplay_cli.tui.dashboard.screens import SubmitScreen
    from worldplay_cli.tui.dashboard.widgets import WorkersTable

    job_id = submit_preview(fresh, "stopped by the user", queue="stoppable", engine="slow", steps=600)
    start_worker("stoppable")
    wait_until(lambda: (engines_env / job_id / "horse.pid").exists(), 60, what="the job to start")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id] and app.snapshot.page.rows[0].status == "started")
        await pilot.press("c", "y")
        await settle(pilot, lambda: status_of(fresh, job_id) == "stopped", timeout_s=30, what="the job to stop")
        workers = app.query_one(WorkersTable)
        # "idle": the worker has finished handling the stopped job (its counts are written with the status).
        await settle(pilot, lambda: workers.row_count == 1 and str(workers.get_row_at(0)[5]) == "idle", timeout_s=30)
        assert [str(cell) for cell in workers.get_row_at(0)[8:10]] == ["0", "0"]
        (worker,) = list_workers(fresh.conn, fresh.settings)
        assert worker.failed_jobs == 0
        # A queue with a live worker: no warning after a submit.
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit form")
        submit_form_values(app.screen, prompt="served", pose="w-3", queue="stoppable", engine="slow")
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: not isinstance(app.screen, SubmitScreen), what="the form to close")
        await settle(pilot, lambda: any(n.message.startswith("submitted ") for n in app._notifications))
        assert not any("no live worker" in n.message for n in app._notifications)


async def test_every_action_is_in_the_command_palette(fresh):
    from rq.suspension import WORKERS_SUSPENDED

    job_id = submit_preview(fresh, "palette")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: table_ids(app) == [job_id])
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for title in ("Cancel job", "Retry job", "Re-queue job with edits", "Delete job"):
            assert f"{title} {job_id}" in titles
        assert {"Submit a job", "Suspend or resume workers", "Sort by status", "Dashboard help"} <= titles
        await pilot.press("ctrl+p")
        await pilot.press(*"suspend")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot, lambda: fresh.conn.exists(WORKERS_SUSPENDED), what="suspension from the palette")


async def test_help_lists_the_keys(fresh):
    from textual.widgets import Markdown

    from worldplay_cli.tui.dashboard.screens import HelpScreen

    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.press("question_mark")
        await settle(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = app.screen.markdown
        assert "| `c` | Cancel |" in text and "| `x`, `delete` | Delete |" in text and "job detail" in text
        assert "| `C` | Cancel batch |" in text and "| `g` | Batches |" in text
        app.screen.query_one(Markdown)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.slow
async def test_a_vanished_redis_shows_a_banner_and_the_dashboard_reconnects(tmp_path):
    from textual.widgets import Static

    from worldplay_cli import redis_server as server
    from worldplay_cli.contract.settings import ServerSettings, Settings
    from worldplay_cli.tui.dashboard import Dashboard, RedisSource

    settings = Settings(server=ServerSettings(data_dir=tmp_path / "redis"), output_root=tmp_path / "outputs")
    server.start(settings)
    try:
        app = Dashboard(source=RedisSource(server.redis_url(settings), settings, nvml=False), refresh_s=0.2)
        async with app.run_test(size=(200, 50)) as pilot:
            banner = app.query_one("#banner", Static)
            await settle(pilot, lambda: app.snapshot is not None)
            assert not banner.has_class("-visible")
            server.stop(settings)
            await settle(pilot, lambda: banner.has_class("-visible"), what="the banner")
            assert "Redis unreachable" in str(banner.render())
            await pilot.press("s")  # keys still work while Redis is away
            assert app.job_query.sort == "id"
            server.start(settings)
            await settle(pilot, lambda: not banner.has_class("-visible"), what="the reconnection")
            assert any("reconnected" in notification.message for notification in app._notifications)
    finally:
        server.stop(settings)


@pytest.mark.slow
def test_cli_prints_a_snapshot_as_json_and_one_line_for_an_unreachable_redis(world):
    import json

    env = {**os.environ, **world.env}
    result = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "dashboard", "--json", "--redis", world.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"]["started"] == 1 and data["counts"]["queued"] == 1
    assert {job["id"] for job in data["jobs"]} == set(WORLD_IDS.values())
    assert "@" not in data["redis"] or "****" in data["redis"]
    result = subprocess.run(
        [sys.executable, "-m", "worldplay_cli", "dashboard", "--redis", "redis://127.0.0.1:1/0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach Redis") and result.stderr.count("\n") == 1


@pytest.mark.slow
async def test_workers_panel_shows_a_live_worker(fresh, start_worker):
    import socket

    from worldplay_cli.tui.dashboard.widgets import WorkersTable

    process = start_worker("idle-queue")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(WorkersTable)
        await settle(pilot, lambda: table.row_count == 1, timeout_s=30, what="the worker to register")
        await settle(pilot, lambda: str(table.get_row_at(0)[5]) == "idle", what="the worker to wait for jobs")
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[1:6] == [socket.gethostname(), str(process.pid), "idle-queue", "cpu", "idle"]
        assert cells[7].endswith("s ago") and cells[8:] == ["0", "0"]
        await pilot.press("w")
        assert not table.display


BUSY_LUA = """
local deadline = tonumber(ARGV[1])
local now = redis.call('TIME')
while tonumber(now[1]) + tonumber(now[2]) / 1e6 < deadline do now = redis.call('TIME') end
return 1
"""


@pytest.mark.slow
async def test_keys_are_handled_while_a_refresh_waits_on_a_busy_redis(fresh):
    import threading

    from worldplay_cli.tui.dashboard.widgets import JobsTable

    submit_preview(fresh, "one job")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        server_now = fresh.conn.time()
        blocker_conn = redis.Redis.from_url(fresh.url)
        # A script that spins for 3 s blocks the whole server, so the next refresh hangs on it.
        blocker = threading.Thread(
            target=blocker_conn.eval, args=(BUSY_LUA, 0, server_now[0] + server_now[1] / 1e6 + 3)
        )
        blocker.start()
        await settle(pilot, lambda: app._refreshing, what="a refresh to start")
        await pilot.press("s", "S", "slash", *"one")
        assert blocker.is_alive()  # all of that happened while Redis could not answer
        assert app.job_query.sort == "id" and app.job_query.descending and app.job_query.text == "one"
        assert str(app.query_one(JobsTable).columns["id"].label) == "ID ▼"
        blocker.join()
        blocker_conn.close()


# --- snapshots (fixed clock and time zone; the world's ids and times are pinned) ------------------------


@pytest.fixture
def pinned_app(world, monkeypatch):
    from worldplay_cli.tui.dashboard import Dashboard, RedisSource

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    source = RedisSource(world.url, world.settings, clock=lambda: PINNED_NOW, nvml=False)
    yield Dashboard(source=source, refresh_s=0.2)
    monkeypatch.undo()
    time.tzset()


def pinned(*keys: str):
    from textual.widgets import Input

    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(pilot, lambda: app.snapshot is not None)
        app.sub_title = "unix socket (test)"
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.3)
        for text_input in app.screen.query(Input):  # a blinking cursor would make the picture random
            text_input.cursor_blink = False
        await pilot.pause(0.1)

    return run_before


def test_snapshot_jobs_table(pinned_app, snap_compare):
    assert snap_compare(pinned_app, terminal_size=(190, 30), run_before=pinned())


def test_snapshot_cancel_confirmation(pinned_app, snap_compare):
    assert snap_compare(pinned_app, terminal_size=(190, 30), run_before=pinned("down", "down", "down", "down", "c"))


def test_snapshot_requeue_form(pinned_app, snap_compare):
    assert snap_compare(pinned_app, terminal_size=(120, 48), run_before=pinned("down", "down", "down", "down", "e"))


def test_snapshot_jobs_table_at_80_columns(pinned_app, snap_compare):
    assert snap_compare(pinned_app, terminal_size=(80, 24), run_before=pinned())


def test_snapshot_submit_form(pinned_app, snap_compare):
    assert snap_compare(pinned_app, terminal_size=(100, 36), run_before=pinned("n"))


# --- the incremental index under the table --------------------------------------------------------------


def enqueue_noops(world: World, count: int, queue: str = "generate") -> list[str]:
    from worldplay_cli.contract.queue import rq_queue

    return [rq_queue(world.conn, queue).enqueue(TASK_NOOP).id for _ in range(count)]


def test_the_index_rereads_only_what_can_have_changed(fresh):
    from worldplay_cli.contract.queue import fetch_job, set_failure
    from worldplay_cli.jobs_index import JobsIndex

    ids = enqueue_noops(fresh, 20)
    clock = [1000.0]
    index = JobsIndex(fresh.conn, hot_window_s=5, clock=lambda: clock[0])
    first = index.refresh()
    assert (first.jobs, first.reread, first.changed) == (20, 20, True)
    again = index.refresh()
    assert (again.reread, again.changed) == (0, False)

    job = fetch_job(fresh.conn, ids[0])
    job.cancel()
    moved = index.refresh()
    assert moved.reread == 1 and index.rows[ids[0]].status == "canceled"
    # The failure reason lands in meta after the move: the job stays "hot" for a while and is read again.
    set_failure(job, Failure(kind="canceled", message="late reason"))
    assert index.refresh().reread == 1 and index.rows[ids[0]].failure["message"] == "late reason"
    clock[0] += 6
    assert index.refresh().reread == 0

    make_started(fresh, ids[1], Progress(stage="render", step=1, total=10, fraction=0.1))
    index.refresh()
    job = fetch_job(fresh.conn, ids[1])
    job.meta["progress"] = Progress(stage="render", step=5, total=10, fraction=0.5).model_dump()
    job.save_meta()
    clock[0] += 6
    assert index.refresh().reread == 1  # running jobs are read on every refresh
    assert index.rows[ids[1]].progress["step"] == 5

    fetch_job(fresh.conn, ids[2]).delete()  # behind our back: the jobs index still names it
    gone = index.refresh()
    assert gone.changed and ids[2] not in index.rows and gone.jobs == 19
    assert fresh.conn.zscore(JOBS_INDEX, ids[2]) is None

    job = fetch_job(fresh.conn, ids[3])
    job.meta["summary"] = {"prompt": "edited behind our back"}
    job.save_meta()
    index.refresh()
    assert index.rows[ids[3]].prompt is None  # a queued job that did not move is not read again...
    index.invalidate([ids[3]])
    index.refresh()
    assert index.rows[ids[3]].prompt == "edited behind our back"  # ...until the caller asks


def test_index_queries_sort_filter_and_page(fresh):
    from worldplay_cli.jobs_index import SORT_KEYS, JobQuery, JobsIndex

    ids = [submit_preview(fresh, f"prompt {letter}", queue=queue) for letter, queue in zip("cab", ("q1", "q2", "q1"))]
    noops = enqueue_noops(fresh, 2)
    index = JobsIndex(fresh.conn)
    index.refresh()
    for key in SORT_KEYS:
        for descending in (False, True):
            page = index.query(JobQuery(sort=key, descending=descending))
            assert sorted(row.id for row in page.rows) == sorted(ids + noops)
    by_prompt = [row.id for row in index.query(JobQuery(sort="prompt", descending=False)).rows]
    assert by_prompt[:3] == [ids[1], ids[2], ids[0]] and set(by_prompt[3:]) == set(noops)  # no prompt: last
    by_prompt = [row.id for row in index.query(JobQuery(sort="prompt", descending=True)).rows]
    assert by_prompt[:3] == [ids[0], ids[2], ids[1]] and set(by_prompt[3:]) == set(noops)
    assert [row.id for row in index.query(JobQuery(text="PROMPT B")).rows] == [ids[2]]
    assert {row.id for row in index.query(JobQuery(kinds=frozenset({"generate"}))).rows} == set(ids)
    assert index.query(JobQuery(statuses=frozenset({"failed"}))).rows == []
    page = index.query(JobQuery(sort="id", descending=False, offset=40, limit=2))
    assert page.offset == 4 and page.matched == 5 and len(page.rows) == 1  # past the end: the last page
    assert page.counts["queued"] == 5 and page.total == 5
    with pytest.raises(ValueError, match="unknown sort key"):
        index.query(JobQuery(sort="colour"))


def test_keys_help_and_palette_come_from_one_command_table():
    from textual.actions import parse

    from worldplay_cli.tui.dashboard import Dashboard, keymap
    from worldplay_cli.tui.dashboard.screens import JobDetailScreen

    assert Dashboard.BINDINGS == keymap.bindings("jobs") and JobDetailScreen.BINDINGS == keymap.bindings("detail")
    for command in keymap.COMMANDS:
        namespace, name, _ = parse(command.action)
        owner = JobDetailScreen if command.job_verb or command.batch_verb else Dashboard
        assert namespace == "app" or hasattr(owner, f"action_{name}") and hasattr(Dashboard, f"action_{name}"), command
        assert command.keys or command.palette, f"{command.title}: neither a key nor a palette entry"


# --- batches ----------------------------------------------------------------------------------------------


def submit_batch(world: World, name: str) -> dict:
    """Two preview generations, each with an eval job after it, in one batch (as `worldplay batch` submits)."""
    from worldplay_cli.batch import BatchFile, plan, submit_batch

    batch = BatchFile(
        version=1, name=name, eval=True, defaults={"engine": "preview", "prompt": name, **SMALL}, grid={"seed": [1, 2]}
    )
    return submit_batch(batch, plan(batch, world.settings), world.settings, world.conn)


def batch_ids(submitted: dict) -> tuple[list[str], list[str]]:
    return [job["job_id"] for job in submitted["jobs"]], [job["eval_job_id"] for job in submitted["jobs"]]


async def test_grouping_by_batch_and_cancel_and_retry_of_a_whole_batch(fresh):
    from worldplay_cli.tui.dashboard.screens import ConfirmScreen
    from worldplay_cli.tui.dashboard.widgets import BATCH_ROW

    lone = submit_preview(fresh, "in no batch")
    first, second = submit_batch(fresh, "first"), submit_batch(fresh, "second")
    generations, evals = batch_ids(second)
    app = dashboard(fresh)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 9)
        await pilot.press("g")
        await settle(pilot, lambda: len(table_ids(app)) == 12, what="a header row above each batch")
        keys = table_ids(app)
        # Newest first: each batch where its newest job is, the job of no batch under its own header last.
        headers = [BATCH_ROW + second["batch"], BATCH_ROW + first["batch"], BATCH_ROW]
        assert [key for key in keys if key.startswith(BATCH_ROW)] == headers
        assert keys[0] == headers[0] and set(keys[1:5]) == set(generations + evals)
        assert set(keys[6:10]) == set(batch_ids(first)[0] + batch_ids(first)[1]) and keys[10:] == [headers[2], lone]
        assert app.snapshot.page.batches[second["batch"]] == {"queued": 2, "deferred": 2}
        header = app.jobs_table._cells[headers[0]]
        assert header["status"].plain == "4 jobs" and header["progress"].plain == "2 queued · 2 deferred"
        assert "by batch" in str(app.status_line.content)

        # The highlighted job stays highlighted under its header; on a header no job is highlighted (enter
        # opens nothing), its batch is.
        assert app.jobs_table.cursor_row == 1
        await pilot.press("home")
        assert app.jobs_table.cursor_row == 0 and app.selected_job_id is None
        await pilot.press("enter")
        assert app.screen is app.screen_stack[0]
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {f"Cancel batch {second['batch']}", f"Retry batch {second['batch']}"} <= titles
        await pilot.press("C")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert second["batch"] in app.screen.question
        await pilot.press("y")
        await settle(
            pilot,
            lambda: [status_of(fresh, job_id) for job_id in generations + evals] == ["canceled"] * 4,
            what="the batch to be canceled",
        )
        await settle(pilot, lambda: app.snapshot.page.batches[second["batch"]] == {"canceled": 4})
        # The other batch and the lone job are left as they were.
        assert [status_of(fresh, job_id) for job_id in (*batch_ids(first)[0], lone)] == ["queued"] * 3

        await pilot.press("down", "R")  # on a job of the batch: the batch of that job
        await settle(
            pilot,
            lambda: [status_of(fresh, job_id) for job_id in generations] == ["queued"] * 2,
            what="the generations re-queued",
        )
        await settle(pilot, lambda: any("2 eval job(s) submitted anew" in n.message for n in app._notifications))
        await settle(pilot, lambda: app.snapshot.page.batches[second["batch"]].get("deferred") == 2)

        await pilot.press("g")
        await settle(pilot, lambda: not any(key.startswith(BATCH_ROW) for key in table_ids(app)), what="no headers")
        assert len(table_ids(app)) == 11  # the two new eval jobs


async def test_the_detail_shows_a_jobs_chain_and_acts_on_its_batch(fresh):
    from worldplay_cli.tui.dashboard.screens import ConfirmScreen

    submitted = submit_batch(fresh, "chain")
    (generation, _), (evaluation, _) = batch_ids(submitted)
    lone = submit_preview(fresh, "in no batch")
    app = dashboard(fresh)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = await open_detail(pilot, app, evaluation)
        await settle(pilot, lambda: screen.query_one("#detail-chain").display, what="the chain")
        lines = [line.split() for line in static_text(screen, "#detail-chain").splitlines() if line.strip()]
        assert lines == [["after", generation, "generate", "queued"], ["this", evaluation, "eval", "deferred"]]
        await pilot.press("escape")

        app.open_job(generation)  # (its id also matches its eval job, which names it: the filter shows two)
        await settle(pilot, lambda: getattr(app.screen, "detail", None) is not None, what="the detail")
        screen = app.screen
        await settle(pilot, lambda: screen.query_one("#detail-chain").display, what="the chain")
        lines = [line.split() for line in static_text(screen, "#detail-chain").splitlines() if line.strip()]
        assert lines == [["this", generation, "generate", "queued"], ["then", evaluation, "eval", "deferred"]]
        titles = {command.title for command in app.get_system_commands(screen)}
        assert f"Cancel batch {submitted['batch']}" in titles
        await pilot.press("C")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await settle(pilot, lambda: status_of(fresh, evaluation) == "canceled", what="the batch to be canceled")
        await settle(pilot, lambda: "canceled" in static_text(screen, "#detail-chain"), what="the chain to follow")
        await pilot.press("escape")

        screen = await open_detail(pilot, app, lone)
        assert not screen.query_one("#detail-chain").display
        await pilot.press("R")
        await settle(pilot, lambda: any("in no batch" in n.message for n in app._notifications))
    assert status_of(fresh, generation) == "canceled" and status_of(fresh, lone) == "queued"
