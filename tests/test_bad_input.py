"""Bad input, across every command group (issue #17): one table, one set of checks.

Every case asserts the house rule: exit code 2 (1 only where it is genuinely an environment failure,
marked `ENV` in the table), exactly one line on stderr, `error: ... (hint: ...)`, no traceback, nothing
enqueued (the jobs index, the queue set and every rq queue unchanged) and nothing written (no job
directory under the output root, no config file, none of the case's target paths).

Paths in the arguments use placeholders filled per test: {tmp} (a scratch directory), {files} (the
shared bad input files made once per session, see `bad_files`).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV = 1  # environment failure (unreachable server, ...): exit 1
BAD = 2  # bad input: exit 2

# A URL nothing listens on: connecting fails at once (connection refused), no network involved.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    code: int = BAD
    env: dict[str, str] = field(default_factory=dict)
    # Paths (with placeholders) that must not exist afterwards.
    targets: tuple[str, ...] = ()
    # Text the error line must contain (besides "error: " and "(hint: ").
    contains: str = ""
    # Jobs made before the case runs (see SETUPS): the state bad input must leave as it was.
    setup: str = ""


def C(
    id: str,
    *args: str,
    code: int = BAD,
    env: dict | None = None,
    targets: tuple = (),
    contains: str = "",
    setup: str = "",
) -> Case:
    return Case(id, args, code, env or {}, targets, contains, setup)


# Commands run before a case: a queued job named `setupjob`, a second one, a canceled one.
SETUPS = {
    "queued": [("generate", "--queue", "--name", "setupjob")],
    "two-queued": [("generate", "--queue", "--name", "setupjob"), ("generate", "--queue", "--name", "setupjob")],
    "canceled": [("generate", "--queue", "--name", "setupjob"), ("jobs", "cancel", "setupjob")],
}


CASES = [
    # --- root ---------------------------------------------------------------------------------------------
    C("root-unknown-command", "bogus"),
    C("root-unknown-option", "--bogus"),
    # --- generate -----------------------------------------------------------------------------------------
    C("gen-queue-traversal", "generate", "--queue-name", "bad queue/../x", contains="queue"),
    C("gen-queue-slash", "generate", "--queue-name", "a/b"),
    C("gen-queue-space", "generate", "--queue-name", "a b", "--wait"),
    C("gen-queue-too-long", "generate", "--queue-name", "q" * 65),
    C("gen-queue-leading-dot", "generate", "--queue-name", ".hidden"),
    C("gen-queue-colon", "generate", "--queue-name", "rq:queue:x"),
    C("gen-resolution-dry-run", "generate", "--resolution", "720p", "--dry-run", contains="720p"),
    C("gen-resolution-queue", "generate", "--resolution", "720p", "--queue"),
    C("gen-resolution-size", "generate", "--resolution", "1080p", "--width", "64", "--height", "64", "--dry-run"),
    C("gen-engine", "generate", "--engine", "nope", "--dry-run"),
    C("gen-sr-preview", "generate", "--sr", "--engine", "preview", "--queue", contains="no super-resolution stage"),
    C(
        "gen-sr-long",
        "generate",
        "--sr",
        "--engine",
        "native",
        "--prompt",
        "x",
        "--pose",
        "w-63",
        "--queue",
        contains="up to 125 frames",
    ),  # fmt: skip
    C(
        "gen-sr-size",
        "generate",
        "--sr",
        "--engine",
        "native",
        "--prompt",
        "x",
        "--width",
        "800",
        "--height",
        "480",
        "--dry-run",
        contains="not one",
    ),  # fmt: skip
    C("gen-keep-pre-sr-alone", "generate", "--keep-pre-sr", "--queue", contains="add --sr"),
    C("gen-variant", "generate", "--variant", "nope", "--queue"),
    C("gen-image-missing", "generate", "--image", "/nonexistent.png", "--queue"),
    C("gen-image-dir", "generate", "--image", "{files}", "--queue"),
    C("gen-image-not-image", "generate", "--image", "{files}/not-an-image.png", "--queue"),
    C("gen-image-tiny", "generate", "--image", "{files}/tiny.png", "--queue"),
    C("gen-image-bomb", "generate", "--image", "{files}/bomb.png", "--queue", contains="pixels"),
    C("gen-image-empty", "generate", "--image", "{files}/empty.png", "--dry-run"),
    C("gen-pose-zero", "generate", "--pose", "w-0", "--queue"),
    C("gen-pose-empty", "generate", "--pose", "", "--queue"),
    C("gen-pose-blank", "generate", "--pose", " , ", "--queue"),
    C("gen-pose-garbage", "generate", "--pose", "fly-3", "--queue"),
    C("gen-pose-huge", "generate", "--pose", "w-199999", "--queue", contains="latents"),
    C("gen-pose-huge-dry-run", "generate", "--pose", "w-199999", "--dry-run"),
    C("gen-pose-over-limit", "generate", "--pose", "w-2048", "--queue"),
    C("gen-pose-many-segments", "generate", "--pose", ",".join(["w-1"] * 3000), "--queue"),
    C("gen-pose-giant-number", "generate", "--pose", "w-" + "9" * 40, "--queue"),
    C("gen-pose-nested", "generate", "--pose", "{files}/nested.json", "--queue", contains="nest"),
    C("gen-pose-long-file", "generate", "--pose", "{files}/long.json", "--queue", contains="latents"),
    C("gen-pose-big-file", "generate", "--pose", "{files}/big.json", "--queue", contains="bytes"),
    C("gen-pose-missing-file", "generate", "--pose", "/nonexistent/traj.json", "--queue"),
    C("gen-pose-nan", "generate", "--pose", "{files}/nan.json", "--queue"),
    C("gen-pose-invalid-length", "generate", "--pose", "w-30", "--queue"),
    C("gen-pose-bi-length", "generate", "--variant", "bi", "--pose", "w-3", "--queue"),
    C("gen-pose-limit-env", "generate", "--pose", "w-31", "--queue", env={"WORLDPLAY_LIMITS__MAX_LATENTS": "16"}),
    C("gen-frames-mismatch", "generate", "--frames", "100", "--queue"),
    C("gen-frames-zero", "generate", "--frames", "0", "--queue"),
    C("gen-frames-negative", "generate", "--frames", "-5", "--queue"),
    C("gen-width-only", "generate", "--width", "64", "--queue"),
    C("gen-width-odd", "generate", "--width", "100", "--height", "64", "--queue"),
    C("gen-width-negative", "generate", "--width", "-16", "--height", "64", "--queue"),
    C("gen-width-huge", "generate", "--width", "8192", "--height", "64", "--queue"),
    C("gen-seed-negative", "generate", "--seed", "-1", "--queue"),
    C("gen-seed-huge", "generate", "--seed", str(2**40), "--queue"),
    C("gen-steps-zero", "generate", "--steps", "0", "--queue"),
    C("gen-steps-text", "generate", "--steps", "abc", "--queue"),
    C("gen-guidance-huge", "generate", "--guidance", "100", "--queue"),
    C("gen-guidance-nan", "generate", "--guidance", "nan", "--queue"),
    C("gen-gpus-zero", "generate", "--gpus", "0", "--queue"),
    C("gen-timeout-zero", "generate", "--timeout", "0", "--queue"),
    C("gen-name-slash", "generate", "--name", "../etc", "--queue"),
    C("gen-memory-profile", "generate", "--memory-profile", "nope", "--queue"),
    C("gen-native-no-prompt", "generate", "--engine", "native", "--queue"),
    C("gen-wait-no-queue", "generate", "--wait"),
    C("gen-rewrite-policy", "generate", "--rewrite", "sometimes", "--queue", contains="--rewrite-required"),
    # The spellings of these flags when they took a value: a usage error naming the new one.
    C("gen-queue-old-spelling", "generate", "--queue", "fast", contains="use --queue-name fast"),
    C("gen-queue-old-equals", "generate", "--queue=fast", contains="use --queue-name fast"),
    C("gen-rewrite-old-spelling", "generate", "--rewrite", "required", "--queue", contains="use --rewrite-required"),
    C("gen-rewrite-old-equals", "generate", "--rewrite=required", "--queue", contains="use --rewrite-required"),
    C("gen-output-root-file", "generate", "--output-root", "{files}/tiny.png", "--queue"),
    C("gen-redis-scheme", "generate", "--redis-url", "http://localhost:6379", "--queue", contains="redis://"),
    C("gen-redis-garbage", "generate", "--redis-url", "not a url", "--queue"),
    C("gen-redis-env-scheme", "generate", "--queue", env={"WORLDPLAY_REDIS_URL": "ftp://x"}),
    C("gen-redis-dead", "generate", "--redis-url", DEAD_REDIS, "--queue", code=ENV),
    C("gen-config-broken", "generate", "--config", "{files}/broken.toml", "--queue"),
    C("gen-config-unknown-key", "generate", "--config", "{files}/unknown-key.toml", "--queue"),
    C("gen-config-bad-queue", "generate", "--config", "{files}/bad-queue.toml", "--queue"),
    C("gen-unknown-option", "generate", "--bogus"),
    C("gen-extra-argument", "generate", "extra"),
    # --- worker (refused before any worker process is spawned) --------------------------------------------
    C("worker-queue-traversal", "worker", "--queue", "bad queue/../x"),
    C("worker-queue-empty", "worker", "--queue", ""),
    C("worker-queue-slash", "worker", "--queue", "a/b", "--burst"),
    C("worker-max-jobs-negative", "worker", "--max-jobs", "-1"),
    C("worker-max-jobs-zero", "worker", "--max-jobs", "0"),
    C("worker-max-jobs-text", "worker", "--max-jobs", "many"),
    C("worker-gpus-text", "worker", "--gpus", "x"),
    C("worker-gpus-negative", "worker", "--gpus", "-1"),
    C("worker-gpus-twice", "worker", "--gpus", "0,0"),
    C("worker-gpus-reversed", "worker", "--gpus", "3-1"),
    C("worker-gpus-empty-set", "worker", "--gpus", "0,,1"),
    C("worker-redis-scheme", "worker", "--redis-url", "http://x", contains="redis://"),
    C("worker-redis-dead", "worker", "--redis-url", DEAD_REDIS, "--burst", code=ENV),
    C("worker-output-root-file", "worker", "--output-root", "{files}/tiny.png"),
    C("worker-config-broken", "worker", "--config", "{files}/broken.toml"),
    C("worker-unknown-option", "worker", "--bogus"),
    # --- jobs ---------------------------------------------------------------------------------------------
    C("jobs-cancel-dotdot", "jobs", "cancel", ".."),
    C("jobs-retry-dotdot", "jobs", "retry", ".."),
    C("jobs-rm-dotdot", "jobs", "rm", ".."),
    C("jobs-show-dotdot", "jobs", "show", ".."),
    C("jobs-logs-dotdot", "jobs", "logs", ".."),
    C("jobs-cancel-slash", "jobs", "cancel", "a/b"),
    C("jobs-rm-files-traversal", "jobs", "rm", "--files", "../../etc"),
    C("jobs-cancel-unknown", "jobs", "cancel", "nosuchjob", contains="jobs list"),
    C("jobs-retry-unknown", "jobs", "retry", "nosuchjob", contains="jobs list"),
    C("jobs-rm-unknown", "jobs", "rm", "nosuchjob", contains="jobs list"),
    C("jobs-show-unknown", "jobs", "show", "nosuchjob"),
    C("jobs-logs-unknown", "jobs", "logs", "nosuchjob"),
    C("jobs-show-glob", "jobs", "show", "*"),
    C("jobs-cancel-empty", "jobs", "cancel", ""),
    C("jobs-cancel-missing-arg", "jobs", "cancel"),
    C("jobs-list-limit-negative", "jobs", "list", "--limit", "-1"),
    C("jobs-list-limit-zero", "jobs", "list", "--limit", "0"),
    C("jobs-list-offset-negative", "jobs", "list", "--offset", "-1"),
    C("jobs-list-status", "jobs", "list", "--status", "nope"),
    C("jobs-list-queue", "jobs", "list", "--queue", "a/b"),
    C("jobs-logs-lines-negative", "jobs", "logs", "x", "--lines", "-1"),
    C("jobs-list-redis-scheme", "jobs", "list", "--redis-url", "http://x"),
    C("jobs-list-redis-dead", "jobs", "list", "--redis-url", DEAD_REDIS, code=ENV),
    C("jobs-workers-socket-missing", "jobs", "workers", "--redis-url", "unix:///nonexistent/redis.sock", code=ENV),
    C("jobs-unknown-command", "jobs", "bogus"),
    C("jobs-retry-queued", "jobs", "retry", "setupjob", setup="queued"),
    C("jobs-cancel-canceled", "jobs", "cancel", "setupjob", setup="canceled"),
    C("jobs-show-ambiguous", "jobs", "show", "setupjob", setup="two-queued"),
    C("jobs-cancel-ambiguous", "jobs", "cancel", "setupjob", setup="two-queued"),
    C("jobs-rm-dotdot-with-jobs", "jobs", "rm", "..", setup="queued"),
    C("jobs-cancel-dotdot-with-jobs", "jobs", "cancel", "..", "--json", setup="two-queued"),
    C("gen-queue-traversal-with-jobs", "generate", "--queue-name", "../setupjob", setup="queued"),
    # --- traj ---------------------------------------------------------------------------------------------
    C("traj-new-zero", "traj", "new", "w-0", "-o", "{tmp}/out.json", targets=("{tmp}/out.json",)),
    C("traj-new-exists", "traj", "new", "w-3", "-o", "{files}/nan.json"),
    C("traj-new-no-dir", "traj", "new", "w-3", "-o", "{tmp}/nodir/out.json", targets=("{tmp}/nodir",)),
    C("traj-new-format", "traj", "new", "w-3", "-o", "{tmp}/out.json", "--format", "nope", targets=("{tmp}/out.json",)),
    C(
        "traj-new-format-options",
        "traj",
        "new",
        "w-3",
        "-o",
        "{tmp}/out.json",
        "--format",
        "matrices:foo",
        targets=("{tmp}/out.json",),
    ),
    C("traj-new-fix", "traj", "new", "w-3", "-o", "{tmp}/out.json", "--fix", "nope", targets=("{tmp}/out.json",)),
    C(
        "traj-new-fix-model",
        "traj",
        "new",
        "w-3",
        "-o",
        "{tmp}/out.json",
        "--fix",
        "pad",
        "--model",
        "nope",
        targets=("{tmp}/out.json",),
    ),
    C(
        "traj-new-huge",
        "traj",
        "new",
        "w-199999",
        "-o",
        "{tmp}/out.json",
        targets=("{tmp}/out.json",),
        contains="latents",
    ),
    C(
        "traj-new-pad-over-limit",
        "traj",
        "new",
        "w-18",
        "-o",
        "{tmp}/out.json",
        "--fix",
        "pad",
        "--model",
        "bi",
        env={"WORLDPLAY_LIMITS__MAX_LATENTS": "20"},
        targets=("{tmp}/out.json",),
    ),
    C("traj-new-missing-output", "traj", "new", "w-3"),
    C("traj-new-output-is-dir", "traj", "new", "w-3", "-o", "{files}", "--force"),
    C("traj-show-zero", "traj", "show", "w-0"),
    C("traj-show-typo-preset", "traj", "show", "walk-and-trun"),
    C("traj-show-nested", "traj", "show", "{files}/nested.json", contains="nest"),
    C("traj-show-nested-dict", "traj", "show", "{files}/nested-dict.json"),
    C("traj-show-long", "traj", "show", "{files}/long.json", contains="latents"),
    C("traj-show-long-csv", "traj", "show", "{files}/long.csv", contains="latents"),
    C("traj-show-long-matrices", "traj", "show", "{files}/long-matrices.json"),
    C("traj-show-big", "traj", "show", "{files}/big.json", contains="bytes"),
    C("traj-show-big-csv", "traj", "show", "{files}/big.csv"),
    C(
        "traj-show-file-limit-env",
        "traj",
        "show",
        "{files}/nan.json",
        env={"WORLDPLAY_LIMITS__MAX_TRAJECTORY_BYTES": "10"},
    ),
    C("traj-show-latent-limit-env", "traj", "show", "w-31", env={"WORLDPLAY_LIMITS__MAX_LATENTS": "8"}),
    C("traj-show-nan", "traj", "show", "{files}/nan.json"),
    C("traj-show-duplicate-key", "traj", "show", "{files}/duplicate.json"),
    C("traj-show-not-utf8", "traj", "show", "{files}/latin1.json"),
    C("traj-show-invalid-json", "traj", "show", "{files}/invalid.json"),
    C("traj-show-csv-columns", "traj", "show", "{files}/columns.csv"),
    C("traj-show-missing", "traj", "show", "/nonexistent/traj.json"),
    C("traj-show-directory", "traj", "show", "{files}/"),
    C("traj-show-model", "traj", "show", "w-3", "--model", "nope"),
    C("traj-show-from", "traj", "show", "{files}/nan.json", "--from", "nope"),
    C("traj-show-from-csv", "traj", "show", "{files}/invalid.json", "--from", "csv"),
    C("traj-show-not-rigid", "traj", "show", "{files}/not-rigid.json"),
    C("traj-validate-model", "traj", "validate", "w-3", "--model", "nope"),
    C("traj-validate-frames-zero", "traj", "validate", "w-3", "--frames", "0"),
    C("traj-validate-fix-alone", "traj", "validate", "w-3", "--fix", "pad"),
    C(
        "traj-validate-fix",
        "traj",
        "validate",
        "w-3",
        "--fix",
        "nope",
        "-o",
        "{tmp}/out.json",
        targets=("{tmp}/out.json",),
    ),
    C("traj-validate-huge", "traj", "validate", "w-199999"),
    C("traj-validate-nested", "traj", "validate", "{files}/nested.json"),
    C("traj-convert-to", "traj", "convert", "w-3", "{tmp}/out.json", "--to", "nope", targets=("{tmp}/out.json",)),
    C(
        "traj-convert-to-options",
        "traj",
        "convert",
        "w-3",
        "{tmp}/out.json",
        "--to",
        "matrices:opengl:w2c:x",
        targets=("{tmp}/out.json",),
    ),
    C(
        "traj-convert-scale-zero",
        "traj",
        "convert",
        "w-3",
        "{tmp}/out.json",
        "--scale",
        "0",
        targets=("{tmp}/out.json",),
    ),
    C(
        "traj-convert-scale-nan",
        "traj",
        "convert",
        "w-3",
        "{tmp}/out.json",
        "--scale",
        "nan",
        targets=("{tmp}/out.json",),
    ),
    C("traj-convert-exists", "traj", "convert", "w-3", "{files}/nan.json"),
    C(
        "traj-convert-from-file",
        "traj",
        "convert",
        "w-3",
        "{tmp}/out.json",
        "--from",
        "official",
        targets=("{tmp}/out.json",),
    ),
    C("traj-convert-nested", "traj", "convert", "{files}/nested.json", "{tmp}/out.json", targets=("{tmp}/out.json",)),
    C("traj-convert-long", "traj", "convert", "{files}/long.json", "{tmp}/out.csv", targets=("{tmp}/out.csv",)),
    C("traj-presets-option", "traj", "presets", "--bogus"),
    # traj edit: only what is refused before the editor opens
    C("traj-edit-model", "traj", "edit", "w-3", "--model", "nope"),
    C("traj-edit-frames", "traj", "edit", "w-3", "--frames", "14"),
    C("traj-edit-frames-chunk", "traj", "edit", "w-3", "--frames", "9"),
    C("traj-edit-image-missing", "traj", "edit", "w-3", "--image", "/nonexistent.png"),
    C("traj-edit-image-bomb", "traj", "edit", "w-3", "--image", "{files}/bomb.png"),
    C("traj-edit-image-not-image", "traj", "edit", "w-3", "--image", "{files}/not-an-image.png"),
    C("traj-edit-huge", "traj", "edit", "w-199999"),
    C("traj-edit-nested", "traj", "edit", "{files}/nested.json"),
    C("traj-edit-redis-scheme", "traj", "edit", "w-3", "--redis-url", "http://x"),
    C("traj-unknown-command", "traj", "bogus"),
    # --- download / models (offline or dry run: no network) ------------------------------------------------
    C("download-variant", "download", "nope", "--dry-run", "--offline"),
    C("download-missing-variant", "download", "--dry-run", "--offline"),
    C("download-link", "download", "ar", "--dry-run", "--offline", "--link", "nope"),
    C("download-quota", "download", "ar", "--dry-run", "--offline", "--quota", "lots"),
    C("download-quota-negative", "download", "ar", "--dry-run", "--offline", "--quota", "-5GB"),
    C(
        "download-dirs",
        "download",
        "ar",
        "--dry-run",
        "--offline",
        "--local-dir",
        "{tmp}/a",
        "--model-dir",
        "{tmp}/b",
        targets=("{tmp}/a", "{tmp}/b"),
    ),
    C("download-workers", "download", "ar", "--dry-run", "--offline", "--workers", "0"),
    C("download-skip", "download", "ar", "--dry-run", "--offline", "--skip", "nope"),
    C("models-path-variant", "models", "path", "nope"),
    C("models-rm-variant", "models", "rm", "nope", "--yes"),
    C("models-verify-variant", "models", "verify", "nope", "--model-dir", "{tmp}/models"),
    C("models-unknown-command", "models", "bogus"),
    # --- rewrite (no endpoint is reachable: none is configured, or the options are refused first) ----------
    C("rewrite-image-missing", "rewrite", "a cat", "--image", "/nonexistent.png"),
    C("rewrite-image-not-image", "rewrite", "a cat", "--image", "{files}/not-an-image.png"),
    C("rewrite-image-bomb", "rewrite", "a cat", "--image", "{files}/bomb.png"),
    C("rewrite-timeout-zero", "rewrite", "a cat", "--timeout", "0"),
    C("rewrite-timeout-negative", "rewrite", "a cat", "--timeout", "-1"),
    C("rewrite-empty-prompt", "rewrite", "  "),
    C("rewrite-required-no-endpoint", "rewrite", "a cat", "--required"),
    C("rewrite-system-prompt-missing", "rewrite", "a cat", "--system-prompt", "/nonexistent.md"),
    C("rewrite-base-url-scheme", "rewrite", "a cat", "--base-url", "ftp://example.invalid/v1", "--required"),
    C("rewrite-missing-prompt", "rewrite"),
    # --- train / data -------------------------------------------------------------------------------------
    C("train-yaml-syntax", "train", "{files}/syntax.yaml", contains="line"),
    C("train-config-missing", "train", "{tmp}/nope.yaml"),
    C("train-config-not-mapping", "train", "{files}/list.yaml"),
    C("train-config-unknown-example", "train", "nosuchexample"),
    C("train-set-no-equals", "train", "tiny_synthetic", "--set", "nokey", "--dry-run"),
    C("train-set-unknown-key", "train", "tiny_synthetic", "--set", "bogus.key=1", "--dry-run"),
    C("train-set-bad-value", "train", "tiny_synthetic", "--set", "optimizer.learning_rate=abc", "--dry-run"),
    C("train-queue-name", "train", "tiny_synthetic", "--queue", "--queue-name", "bad queue/../x"),
    C("train-queue-name-alone", "train", "tiny_synthetic", "--queue-name", "bad queue/../x"),
    C("train-resume-queue-name", "train", "resume", "{tmp}", "--queue-name", "q", contains="resume runs in the fore"),
    C("train-gpus-zero", "train", "tiny_synthetic", "--gpus", "0"),
    C("train-resume-no-run", "train", "resume"),
    C("train-resume-unknown", "train", "resume", "nosuchrun"),
    C("train-two-configs", "train", "a.yaml", "b.yaml"),
    C("data-synth-unwritable", "data", "synth", "{files}/tiny.png/out"),
    C(
        "data-synth-nothing",
        "data",
        "synth",
        "{tmp}/synth",
        "--clips",
        "0",
        "--validation",
        "0",
        targets=("{tmp}/synth",),
    ),
    C("data-synth-width", "data", "synth", "{tmp}/synth", "--width", "8", targets=("{tmp}/synth",)),
    C("data-synth-latents", "data", "synth", "{tmp}/synth", "--latents", "1", targets=("{tmp}/synth",)),
    C("data-synth-huge", "data", "synth", "{tmp}/synth", "--latents", "199999", targets=("{tmp}/synth",)),
    C(
        "data-prepare-missing-src",
        "data",
        "prepare",
        "{tmp}/nosrc",
        "{tmp}/out",
        "--model-dir",
        "{tmp}",
        targets=("{tmp}/out",),
    ),
    C(
        "data-prepare-width",
        "data",
        "prepare",
        "{tmp}/nosrc",
        "{tmp}/out",
        "--model-dir",
        "{tmp}",
        "--width",
        "17",
        targets=("{tmp}/out",),
    ),
    C(
        "data-prepare-frames",
        "data",
        "prepare",
        "{tmp}/nosrc",
        "{tmp}/out",
        "--model-dir",
        "{tmp}",
        "--max-frames",
        "5",
        targets=("{tmp}/out",),
    ),
    C(
        "data-prepare-bad-manifest",
        "data",
        "prepare",
        "{files}/invalid.json",
        "{tmp}/out",
        "--model-dir",
        "{tmp}",
        targets=("{tmp}/out",),
    ),
    C("data-unknown-command", "data", "bogus"),
    # --- server (worldplay_env sets redis_url, so nothing here may touch the session's server) ------------
    C("server-port-high", "server", "start", "--port", "70000"),
    C("server-port-negative", "server", "start", "--port", "-1"),
    C("server-start-redis-url-set", "server", "start"),
    C("server-stop-redis-url-set", "server", "stop"),
    C("server-config-broken", "server", "status", "--config", "{files}/broken.toml"),
    C("server-unknown-command", "server", "bogus"),
    # --- config -------------------------------------------------------------------------------------------
    C("config-set-unknown", "config", "set", "nokey", "1"),
    C("config-set-empty-key", "config", "set", "", "1"),
    C("config-set-not-int", "config", "set", "worker.heartbeat_s", "abc"),
    C("config-set-out-of-range", "config", "set", "worker.heartbeat_s", "0"),
    C("config-set-inconsistent", "config", "set", "worker.lost_after_s", "3"),
    C("config-set-queue", "config", "set", "queue.default_queue", "bad/../q"),
    C("config-set-redis-scheme", "config", "set", "redis_url", "http://x"),
    C("config-set-limit-zero", "config", "set", "limits.max_latents", "0"),
    C("config-set-limit-text", "config", "set", "limits.max_latents", "lots"),
    C("config-set-section", "config", "set", "worker", "1"),
    C("config-show-broken", "config", "show", "--config", "{files}/broken.toml"),
    C("config-show-env", "config", "show", env={"WORLDPLAY_WORKER__HEARTBEAT_S": "soon"}),
    C("config-set-missing-value", "config", "set", "worker.heartbeat_s"),
    # --- dev / doctor / dashboard --------------------------------------------------------------------------
    C("dev-tiny-model-file", "dev", "tiny-model", "{files}/tiny.png"),
    C("dev-tiny-model-not-empty", "dev", "tiny-model", "{files}"),
    C("dev-tiny-model-seed", "dev", "tiny-model", "{tmp}/tiny", "--seed", "abc", targets=("{tmp}/tiny",)),
    C("dev-tiny-model-family", "dev", "tiny-model", "{tmp}/tiny", "--family", "no", contains="unknown model family"),
    C("dev-unknown-command", "dev", "bogus"),
    C("doctor-redis-scheme", "doctor", "--redis-url", "http://x"),
    C("doctor-config-broken", "doctor", "--config", "{files}/broken.toml"),
    C("doctor-unknown-option", "doctor", "--bogus"),
    C("dashboard-refresh", "dashboard", "--refresh", "0.01", "--json"),
    C("dashboard-redis-scheme", "dashboard", "--redis-url", "http://x", "--json"),
    C("dashboard-redis-dead", "dashboard", "--redis-url", DEAD_REDIS, "--json", code=ENV),
]


def _png(width: int, height: int, raw_rows) -> bytes:
    """A 1-bit greyscale PNG written by hand (PIL would need the full image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for row in raw_rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-files")
    # A decompression bomb: 30000x30000 pixels (900 megapixels) in ~110 KB.
    row = b"\x00" * (1 + 30000 // 8)
    (root / "bomb.png").write_bytes(_png(30000, 30000, (row for _ in range(30000))))
    (root / "tiny.png").write_bytes(_png(8, 8, (b"\x00\x00" for _ in range(8))))
    (root / "empty.png").write_bytes(b"")
    (root / "not-an-image.png").write_text("hello")
    (root / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "nested-dict.json").write_text('{"0":' * 100_000 + "1" + "}" * 100_000)
    eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    K = [[969.7, 0.0, 960.0], [0.0, 969.7, 540.0], [0.0, 0.0, 1.0]]
    (root / "long.json").write_text(json.dumps({str(i): {"extrinsic": eye, "K": K} for i in range(5000)}))
    (root / "long-matrices.json").write_text(json.dumps([eye] * 5000))
    header = "latent,x,y,z,yaw,pitch\n"
    (root / "long.csv").write_text(header + "".join(f"{i},0,0,{i},0,0\n" for i in range(100_000)))
    with open(root / "big.json", "wb") as handle:  # sparse: 2 GB of nothing, on no disk
        handle.truncate(2 * 1024**3)
    with open(root / "big.csv", "wb") as handle:
        handle.truncate(2 * 1024**3)
    nan_pose = "[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]"
    (root / "nan.json").write_text(f'{{"0": {{"extrinsic": {nan_pose}, "K": {json.dumps(K)}}}}}')
    (root / "duplicate.json").write_text(
        f'{{"0": {{"extrinsic": {json.dumps(eye)}, "K": {json.dumps(K)}}}, "0": {{}}}}'
    )
    (root / "latin1.json").write_bytes('{"é": 1}'.encode("latin-1"))
    (root / "invalid.json").write_text('{"0": ')
    (root / "columns.csv").write_text("a,b\n1,2\n")
    skew = [[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    (root / "not-rigid.json").write_text(json.dumps({"0": {"extrinsic": skew, "K": K}}))
    (root / "broken.toml").write_text("this is = = not toml\n")
    (root / "unknown-key.toml").write_text("bogus_setting = 1\n")
    (root / "bad-queue.toml").write_text('[queue]\ndefault_queue = "a/../b"\n')
    (root / "syntax.yaml").write_text("model:\n  variant: ar\n optimizer: [\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    return root


def _redis_state(conn) -> dict:
    from worldplay_cli.contract.specs import JOBS_INDEX, QUEUES_SET

    queues = sorted(key.decode() for key in conn.scan_iter("rq:queue:*"))
    return {
        "index": conn.zrange(JOBS_INDEX, 0, -1),
        "queues": sorted(conn.smembers(QUEUES_SET)),
        "rq_queues": {key: conn.llen(key) if conn.type(key) == b"list" else None for key in queues},
        "rq_jobs": sorted(conn.scan_iter("rq:job:*")),
    }


@pytest.fixture
def no_spawning(monkeypatch):
    """A refused command must never start a worker, a training process or the editor: doing so fails the case."""
    from worldplay_cli.commands import train
    from worldplay_cli.runtime import Runtime
    from worldplay_cli.tui.editor.app import EditorApp

    def refuse(*args, **kwargs):
        raise AssertionError("a process was started for bad input")

    monkeypatch.setattr(Runtime, "spawn_worker", refuse)
    monkeypatch.setattr(EditorApp, "run", refuse)
    monkeypatch.setattr(train, "run_training_process", refuse)


@pytest.fixture
def restore_limits():
    from trajectories import limits

    saved = (limits.MAX_LATENTS, limits.MAX_FILE_BYTES)
    yield
    limits.MAX_LATENTS, limits.MAX_FILE_BYTES = saved


def _fill(text: str, tmp: Path, files: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{files}", str(files))


def test_the_table_is_big_and_ids_are_unique():
    assert len(CASES) >= 120
    assert len({case.id for case in CASES}) == len(CASES)
    groups = {case.args[0] for case in CASES}
    for group in (
        "generate",
        "worker",
        "jobs",
        "traj",
        "download",
        "models",
        "rewrite",
        "train",
        "data",
        "server",
        "config",
        "dev",
        "doctor",
    ):
        assert group in groups


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    case: Case, cli, redis_conn, worldplay_env, bad_files, tmp_path, monkeypatch, no_spawning, restore_limits
):
    for name in ("T2V_REWRITE_BASE_URL", "T2V_REWRITE_MODEL_NAME", "I2V_REWRITE_BASE_URL", "I2V_REWRITE_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = [_fill(arg, scratch, bad_files) for arg in case.args]
    for setup in SETUPS.get(case.setup, []):
        assert cli(*setup)[0] == 0
    output_root = Path(worldplay_env["WORLDPLAY_OUTPUT_ROOT"])
    job_dirs = sorted(output_root.iterdir()) if output_root.exists() else []
    before = _redis_state(redis_conn)

    code, out, err = cli(*args)

    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "(hint: " in line, line
    assert "internal error" not in line, line
    assert case.contains.lower() in line.lower(), line
    assert code == case.code, f"exit {code} (expected {case.code}): {line}"
    assert _redis_state(redis_conn) == before, "bad input changed the queue"
    assert (sorted(output_root.iterdir()) if output_root.exists() else []) == job_dirs, (
        "bad input wrote a job directory"
    )
    assert not Path(worldplay_env["WORLDPLAY_CONFIG"]).exists(), "bad input wrote the config file"
    for target in case.targets:
        assert not Path(_fill(target, scratch, bad_files)).exists(), f"bad input wrote {target}"
