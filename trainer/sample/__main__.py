"""`python -m trainer.sample checkpoint=PATH [key=value ...]`: samples of a trained model (see
trainer/sample/cli.py and conf/sample.yaml)."""

from trainer.sample.cli import main

main()
