"""The worldplay worker: rq tasks, the job runner, engines and the native model (torch lives here)."""
