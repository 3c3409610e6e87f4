"""Sampling as a library: autoregressive decoding and iterative unmasking of a model, used by the
samples of each evaluation and by `python -m trainer.sample` alike."""
