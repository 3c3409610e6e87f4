"""A checkpoint's likelihood on a whole split: `python -m trainer.evaluate`."""
