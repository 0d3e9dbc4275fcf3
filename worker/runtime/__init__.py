"""The GPU runtime of a worker: resident models in a supervised group of ranks, and memory profiles.

    rq worker ──fork──> work horse (one per job) ──unix socket──> supervisor (one per rq worker)
                                                                   ├── rank 0  (control socket; model loaded)
                                                                   └── rank 1..N-1 (jobs via the process group)

The horse's side is the `native` engine (`worker.engines.native.NativeEngine`, through `client`),
`supervisor` keeps the group alive across jobs and restarts it when a rank dies, `rank` renders each job
with the native engine's `render`, sequence-parallel over the ranks, and `memory_profiles` decides what
lives on the GPU.
"""
