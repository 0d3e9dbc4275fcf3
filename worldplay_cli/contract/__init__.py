"""The contract between the CLI and the worker: the one part of `worldplay_cli` the worker imports.

- `specs`: job specs, progress, failures, manifests, the task allowlist and Redis key names.
- `settings`: settings (flags > WORLDPLAY_* environment > config file > defaults), their models and limits.
- `errors`: the `(message, hint)` errors and their one-line format.
- `queue`: rq queues, jobs and the JSON serializer as both sides use them, the reaper, job directories.
- `training`: training configs, datasets' manifests and train job specs.
- `variants`: one record per model variant (chunk, recipe, checkpoint folder, download piece, ...); `layout`: the
  model directory's names; `buckets`: the image-size bucket rule.

Imported by `worker` and by the rest of `worldplay_cli`. It imports pydantic, rq, redis and `trajectories`,
never another module of `worldplay_cli` (nor torch): the rules are import-linter contracts in pyproject.toml.
"""
