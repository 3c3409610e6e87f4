import sys

from trainer.cli.plot import main

sys.exit(main())
