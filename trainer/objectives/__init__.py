"""Training modes, one module each: the mode's config (knobs and facts) and its objective.

Every module of this package is imported here, so a mode registers itself in `MODES` by being a
file in this folder; `conf/mode/<name>.yaml` makes it selectable.
"""

import importlib
import pkgutil

from trainer.objectives.base import MODES, Batch, ModeConfig, Objective
from trainer.objectives.filler import Fill, Filler

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODES", "Batch", "Fill", "Filler", "ModeConfig", "Objective"]
