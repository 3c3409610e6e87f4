"""Samples of a trained model: `python -m trainer.sample` and the samples of each evaluation."""
