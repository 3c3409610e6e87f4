"""The command line (the porch): everything that talks to Hydra's runner. `python -m trainer`,
`python -m trainer.sample` and `python -m trainer.plot` enter here; nothing else imports it."""
