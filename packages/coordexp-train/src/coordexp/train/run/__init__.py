"""Run infrastructure owned by the executor: checkpoints, RNG state, logs, manifest, LR schedule."""
