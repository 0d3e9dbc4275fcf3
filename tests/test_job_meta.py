"""The job meta round trip: what the queue, the runner and the reporter write into `job.meta` is what a
listing row (`JobRow`) reads back, and one odd field never breaks a listing."""

from __future__ import annotations

from worldplay_cli.contract.meta import JobMeta
from worldplay_cli.contract.queue import SERIALIZER
from worldplay_cli.contract.specs import Failure, Progress
from worldplay_cli.rows import JobRow


def row_from(meta: dict, status: str = "started") -> JobRow:
    values = [status.encode(), b"default", None, None, None, None, b"worker-1", SERIALIZER.dumps(meta), b""]
    row = JobRow.from_hash("20260522-141503-9f2c1a", values)
    assert row is not None
    return row


def test_what_the_writers_store_is_what_a_row_reads():
    summary = {"kind": "generate", "engine": "preview", "variant": "ar", "prompt": "a harbour", "frames": 13,
               "width": 848, "height": 480, "output_name": None, "queue": "default"}  # fmt: skip
    meta = JobMeta.queued(summary)
    lost = Failure(kind="worker_lost", message="worker w1 lost (no heartbeat for 20 s); re-queued", hint="h")
    assert JobMeta.start_attempt(meta, "/out/job", Progress(stage="starting")) == 1
    JobMeta.note_attempt(meta, lost)
    assert JobMeta.start_attempt(meta, "/out/job") == 2
    JobMeta.set_progress(
        meta, Progress(stage="generate", step=3, total=8, chunk=1, num_chunks=2, fraction=0.4, eta_s=12.5)
    )
    meta["train"] = {"loss_history": []}  # a key another writer owns survives

    row = row_from(SERIALIZER.loads(SERIALIZER.dumps(meta)))
    assert (row.kind, row.engine, row.variant, row.prompt, row.frames) == ("generate", "preview", "ar", "a harbour", 13)
    assert row.attempt == 2 and row.output_dir == "/out/job" and row.failure is None
    assert row.progress["stage"] == "generate" and row.progress["step"] == 3 and row.progress["eta_s"] == 12.5
    read = JobMeta.read(meta)
    assert [(entry.attempt, entry.outcome) for entry in read.history] == [(1, "worker_lost")]
    assert read.train == {"loss_history": []}

    JobMeta.set_failure(meta, Failure(kind="oom", message="out of memory", hint="fewer frames"))
    JobMeta.set_video(meta, "/out/job/video.mp4")
    row = row_from(meta, "failed")
    assert (
        row.failure == {"kind": "oom", "message": "out of memory", "hint": "fewer frames"}
        and row.video == "/out/job/video.mp4"
    )
    JobMeta.clear_outcome(meta)
    assert row_from(meta, "queued").failure is None and row_from(meta, "queued").progress is None


def test_an_odd_field_reads_as_unset_and_the_rest_still_reads():
    row = row_from({"summary": {"prompt": "p"}, "attempt": 3, "progress": {"no": "stage"}, "failure": "boom"})
    assert row.prompt == "p" and row.attempt == 3 and row.progress is None and row.failure is None
    assert row_from({}).attempt == 0 and row_from({}).kind is None


def test_one_progress_line_wherever_progress_is_shown():
    from worldplay_cli.contract.meta import describe_progress

    running = Progress(stage="denoise", step=26, total=50, chunk=2, num_chunks=4, fraction=0.52)
    assert describe_progress(running) == describe_progress(running.model_dump()) == "denoise 26/50 · chunk 2/4"
    assert describe_progress({"stage": "load"}) == "load" and describe_progress(None) == describe_progress({}) == ""
