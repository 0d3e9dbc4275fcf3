"""Live play: key press -> first displayed frame showing it, chunk generation time, displayed fps.

    python bench/play_latency.py [--engines preview,native] [--ahead 1,2] [--seconds 20] [--native-seconds 150]

Each engine runs real sessions the way `worldplay play` does (a private worker on a real Redis, the
player's `PlayClient` with its display clock), with no terminal: a scripted player holds a key set for
about a second (pressed every 33 ms, like a terminal's auto-repeat), lets go for about a second, and so
on. `preview` plays 416x240 frames; `native` the tiny random model (CPU, 64x64 frames: a chunk takes
seconds, so its sessions are longer). Measured per run: the latency of each new hold (p50/p95),
the worker's chunk generation time, the displayed fps and the display stalls.

Then the same arithmetic on the per-chunk times of ../shared/reference/performance-reliability.md
(sections A5 and A2). The arithmetic (`predicted`) replays the player's scheme chunk by chunk for a given
generation time: a hold is sampled at the next latent boundary of display time (every 4 frames), sent with
its chunk's keys when the chunk's samples are complete, and shown `ahead_chunks` chunks later. It is printed
next to each measured run, so the model is checked where it can be.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldplay_cli import redis_server  # noqa: E402
from worldplay_cli.contract.settings import ServerSettings, Settings  # noqa: E402
from worldplay_cli.tui.player.client import FRAMES_PER_LATENT, percentile  # noqa: E402

FPS = 24
CHUNK_LATENTS = 4
FRAMES_PER_CHUNK = CHUNK_LATENTS * FRAMES_PER_LATENT
AUTO_REPEAT_S = 0.033
HOLDS = (("w",), ("right",), ("w", "left"), ("a",), ("s", "up"), ("d",))

# Per-chunk generation time of one 16-frame 480p chunk, from ../shared/reference/performance-reliability.md.
GPU_CHUNK_S = {
    "1x H200, official code, measured (A2: 58.7 s per 125 frames)": 58.7 * FRAMES_PER_CHUNK / 125,
    "1x H100, 50% of peak (A5: 4.3 s + VAE 0.3 s)": 4.3 + 0.3,
    "1x H100, 100% of peak (A5: 2.14 s + VAE 0.16 s)": 2.14 + 0.161,
    "WAN-5B on 1x GB300, measured (A2: DiT + VAE)": 1.015,
    "8x H100 sp=8, 50% of peak (A5: 535 ms + VAE hidden)": 0.535,
    "8x H100 sp=8, 100% of peak (A5: 268 ms)": 0.268,
}


def predicted(generate_s: float, ahead_chunks: int, fps: int = FPS) -> tuple[float, float, float]:
    """(latency p50, latency p95, displayed fps) of the player's scheme for a chunk generation time.

    The scheme, chunk by chunk: chunks 0..ahead-1 are asked for at once; the worker makes them one after
    the other; chunk k is shown from max(its arrival, the end of chunk k-1 on screen) for 16 frames; the
    held keys are sampled at the start of each of its latents, and the last sample asks for chunk
    k + ahead. A press waits for the next sample; sample j of chunk k is on screen at latent j of chunk
    k + ahead. Presses are spread evenly over the steady state (chunk 0's 13 frames are left out)."""
    latent_s = FRAMES_PER_LATENT / fps
    display_s = FRAMES_PER_CHUNK / fps
    chunks = 60
    asked = dict.fromkeys(range(ahead_chunks), 0.0)
    worker_free = screen_free = 0.0
    shown = []
    for chunk in range(chunks + ahead_chunks):
        arrival = max(asked[chunk], worker_free) + generate_s
        worker_free = arrival
        start = max(arrival, screen_free)
        screen_free = start + display_s
        shown.append(start)
        asked[chunk + ahead_chunks] = start + (CHUNK_LATENTS - 1) * latent_s
    samples = [(shown[k] + j * latent_s, shown[k + ahead_chunks] + j * latent_s)
               for k in range(chunks) for j in range(CHUNK_LATENTS)]  # fmt: skip
    first, last = shown[chunks // 3], shown[chunks - ahead_chunks - 1]
    latencies = []
    steps = 4000
    for step in range(steps):
        press = first + (last - first) * step / steps
        _, on_screen = next(sample for sample in samples if sample[0] >= press)
        latencies.append(on_screen - press)
    period = (last - first) / (chunks - ahead_chunks - 1 - chunks // 3)
    return percentile(latencies, 0.5), percentile(latencies, 0.95), FRAMES_PER_CHUNK / period


def play(runtime, engine: str, seconds: float, ahead: int, width: int, height: int) -> dict:
    """One scripted session; its figures."""
    from worldplay_cli.submit import PlayRequest
    from worldplay_cli.tui.player.launch import start_session

    request = PlayRequest(prompt="a quiet street", engine=engine, variant="ar-distilled", width=width, height=height,
                          ahead_chunks=ahead)  # fmt: skip
    session = start_session(runtime, request, None)
    client = session.client
    stop = threading.Event()

    def loop(step):
        while not stop.is_set():
            step(0.05)

    threads = [threading.Thread(target=loop, args=(step,), daemon=True) for step in (client.pump, client.flush)]
    for thread in threads:
        thread.start()
    rng = random.Random(0)
    try:
        deadline = time.monotonic() + 600
        while client.frames_shown == 0:  # the worker starts and loads (not part of the figures)
            if client.outcome is not None or time.monotonic() > deadline:
                raise SystemExit(f"{engine}: the session did not start: {client.outcome}")
            client.tick()
            time.sleep(0.002)
        started, first_frames = time.monotonic(), client.frames_shown
        next_change, hold, next_press = started + rng.uniform(0.5, 1.5), None, 0.0
        while time.monotonic() - started < seconds and client.outcome is None:
            now = time.monotonic()
            if now >= next_change:
                hold = None if hold else rng.choice(HOLDS)
                next_change = now + rng.uniform(0.8, 1.4)
            if hold and now >= next_press:
                for key in hold:
                    client.press(key, now)
                next_press = now + AUTO_REPEAT_S
            client.tick(now)
            time.sleep(0.001)
        elapsed = time.monotonic() - started
        figures = client.figures()
        client.end()
        deadline = time.monotonic() + 120
        while client.outcome is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        session.close()
    latencies = list(client.latencies)
    return {
        "latency_p50": percentile(latencies, 0.5),
        "latency_p95": percentile(latencies, 0.95),
        "holds": len(latencies),
        "generate_s": figures.generate_s,  # the median over the recent chunks
        "fps": (client.frames_shown - first_frames) / elapsed,
        "chunks": figures.chunks,
        "stalls": figures.stalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="preview,native")
    parser.add_argument("--ahead", default="1,2", help="ahead_chunks values to compare")
    parser.add_argument("--seconds", type=float, default=20.0, help="played seconds of a preview session")
    parser.add_argument("--native-seconds", type=float, default=150.0, help="played seconds of a native session")
    args = parser.parse_args()
    sizes = {"preview": (416, 240), "native": (64, 64)}
    durations = {"preview": args.seconds, "native": args.native_seconds}
    aheads = [int(value) for value in args.ahead.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(server=ServerSettings(data_dir=root / "redis"))
        redis_server.start(settings)
        rows = []
        try:
            os.environ.update(
                WORLDPLAY_HOME=str(root / "home"),
                WORLDPLAY_CONFIG=str(root / "config.toml"),
                WORLDPLAY_REDIS_URL=redis_server.redis_url(settings),
                WORLDPLAY_OUTPUT_ROOT=str(root / "out"),
            )
            if "native" in args.engines:
                from worker.pipeline.tiny_model import write_tiny_model

                os.environ["WORLDPLAY_MODEL_DIR"] = str(write_tiny_model(root / "tiny-model"))
            from worldplay_cli.runtime import Runtime

            runtime = Runtime()
            for engine in args.engines.split(","):
                width, height = sizes[engine]
                for ahead in aheads:
                    figures = play(runtime, engine, durations[engine], ahead, width, height)
                    rows.append(
                        (f"{engine} (CPU, {width}x{height}, {durations[engine]:g} s), ahead {ahead}", figures, ahead)
                    )
                    print(f"ran {rows[-1][0]}: {figures}", file=sys.stderr)
        finally:
            redis_server.stop(settings)

    header = f"{'':<72}{'gen s':>7}{'lat p50':>9}{'lat p95':>9}{'fps':>6}{'stalls':>7}   predicted p50/p95/fps"
    print(f"measured: real sessions, holds of ~1 s with 33 ms auto-repeat, video {FPS} fps")
    print(header)
    for label, figures, ahead in rows:
        p50, p95, fps = predicted(figures["generate_s"], ahead)
        print(
            f"{label:<72}{figures['generate_s']:>7.3f}{_s(figures['latency_p50'])}{_s(figures['latency_p95'])}"
            f"{figures['fps']:>6.1f}{figures['stalls']:>7}   {p50:.2f} / {p95:.2f} / {fps:.1f}"
        )
    print("\nthe same arithmetic on GPU per-chunk times (480p, 16-frame chunks; real time is 0.667 s per chunk)")
    print(f"{'':<72}{'gen s':>7}{'lat p50':>9}{'lat p95':>9}{'fps':>6}")
    for label, generate_s in GPU_CHUNK_S.items():
        for ahead in aheads:
            p50, p95, fps = predicted(generate_s, ahead)
            print(f"{label + f', ahead {ahead}':<72}{generate_s:>7.3f}{p50:>9.2f}{p95:>9.2f}{fps:>6.1f}")


def _s(value: float | None) -> str:
    return f"{'–':>9}" if value is None else f"{value:>9.2f}"


if __name__ == "__main__":
    main()
