"""`python -m trainer.sample checkpoint=PATH [key=value ...]`: samples of a trained model (see
trainer/cli/sample.py and conf/sample.yaml)."""

from trainer.cli.signals import nothing_written_while_loading

nothing_written_while_loading()  # before the imports that take seconds

from trainer.cli.sample import main  # noqa: E402

main()
