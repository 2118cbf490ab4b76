"""Training: the one loop (device, DDP, autocast), checkpoints, optimizers and schedules."""
