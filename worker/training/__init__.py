"""Training WorldPlay models: dataset preparation, a synthetic data generator, training methods, the loop,
checkpoints and validation. Run through `python -m worker.training` (the CLI never imports torch)."""
