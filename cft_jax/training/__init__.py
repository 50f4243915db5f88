"""Training: device mesh and sharding rules, train step, checkpoints, metrics."""
