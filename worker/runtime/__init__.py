"""The GPU runtime of a worker: resident models in a supervised group of ranks, and memory profiles.

    rq worker ──fork──> work horse (one per job) ──unix socket──> supervisor (one per rq worker)
                                                                   ├── rank 0  (control socket; model loaded)
                                                                   └── rank 1..N-1 (jobs via the process group)

`engine.ResidentEngine` is the horse's side, `supervisor` keeps the group alive across jobs and
restarts it when a rank dies, `rank` runs the native pipeline sequence-parallel, `memory_profiles`
decides what lives on the GPU.
"""
