"""Training machinery every adapter shares: the one loop, checkpoints, losses, schedules, precision and devices."""
