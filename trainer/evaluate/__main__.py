"""`python -m trainer.evaluate checkpoint=PATH [split=test|val] [data=...]`: a checkpoint's likelihood on
a whole split (see trainer/cli/evaluate.py and conf/evaluate.yaml)."""

from trainer.cli.signals import nothing_written_while_loading

nothing_written_while_loading()  # before the imports that take seconds

from trainer.cli.evaluate import main  # noqa: E402

main()
