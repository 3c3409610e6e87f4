"""`python -m trainer.plot`: the entry point; the command is trainer/cli/plot.py."""
