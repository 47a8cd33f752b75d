"""training: the Trainer, its callbacks, the run folder, checkpoints, the main job, cross-validation."""
