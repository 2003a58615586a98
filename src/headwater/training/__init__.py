"""Training: labels, examples, the pipeline of steps, evaluation, tracking and the registry."""
