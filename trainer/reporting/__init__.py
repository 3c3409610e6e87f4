"""Reporting: the callbacks the engine calls (console, metrics.jsonl, wandb, curves.png, samples),
the timing of a step's phases and the run summary. It never drives training."""
