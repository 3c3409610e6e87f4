"""`python -m trainer.plot RUN_DIR [RUN_DIR ...] [out=PATH.png]`: several runs' curves in one PNG.

A RUN_DIR is a run folder (it holds metrics.jsonl) or a sweep folder (its subfolders are run
folders, e.g. multirun/NAME/0, multirun/NAME/1), which stands for its jobs in numeric order. All
runs are overlaid in one PNG. Default `out`: with one RUN_DIR, `RUN_DIR/curves.png` (a sweep's
overlay lands in the sweep folder); with several, `curves.png` in the current folder. An argument
`key=value` whose key is a plain name is a setting (only `out` exists); any other argument is a
folder. Bad input ends with one line on stderr starting with `error: ` and exit code 2, and
nothing is written.
"""

import os
import re
import sys
from pathlib import Path

from trainer.errors import UserError
from trainer.reporting.plot.curves import METRICS, load_runs, sweep_jobs
from trainer.reporting.plot.figure import draw
from trainer.reporting.plot.logger import CURVES

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 74  # EX_IOERR, as for the trainer: the output folder could not be written
SETTING = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)
RUN_DIR_ALLOWED = "a run folder holding metrics.jsonl, or a sweep folder whose subfolders are run folders"


def expand_run_dir(argument: str) -> list[Path]:
    """The run folders an argument stands for: itself, or a sweep folder's jobs."""
    folder = Path(argument)
    if not folder.exists():
        raise UserError(argument, "no such folder", RUN_DIR_ALLOWED)
    if not folder.is_dir():
        raise UserError(argument, "not a folder", RUN_DIR_ALLOWED)
    if (folder / METRICS).is_file():
        return [folder]
    try:
        jobs = sweep_jobs(folder)
    except OSError as err:
        raise UserError(argument, f"cannot be read: {err.strerror or err}", RUN_DIR_ALLOWED) from err
    if not jobs:
        raise UserError(argument, f"no {METRICS} in it or in its subfolders", RUN_DIR_ALLOWED)
    return jobs


def check_out(value: str) -> Path:
    out = Path(value)
    allowed = "a .png file in an existing, writable folder"
    if out.suffix.lower() != ".png":
        raise UserError(f"out={value}", "not a .png file", allowed)
    if out.is_dir():
        raise UserError(f"out={value}", "is a folder", allowed)
    parent = out.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"out={value}", f"the folder {str(parent)!r} does not exist or is not writable", allowed)
    return out


def parse_arguments(arguments: list[str]) -> tuple[list[Path], Path]:
    """The run folders (sweeps expanded) and the output file; raises UserError for bad input."""
    folders, settings = [], {}
    for argument in arguments:
        setting = SETTING.match(argument)
        if setting is None:
            folders.append(argument)
        elif setting[1] != "out":
            raise UserError(argument, f"unknown key {setting[1]!r}", "out=PATH.png")
        elif "out" in settings:
            raise UserError(argument, "out is given twice", "one out=PATH.png")
        else:
            settings["out"] = setting[2]
    if not folders:
        raise UserError("RUN_DIR", "missing", RUN_DIR_ALLOWED + "; one or more, then optionally out=PATH.png")
    expanded = [run_dir for folder in folders for run_dir in expand_run_dir(folder)]
    run_dirs = list(dict.fromkeys(run_dir.resolve() for run_dir in expanded))  # a run named twice is drawn once
    if "out" in settings:
        return run_dirs, check_out(settings["out"])
    # one argument: the picture lives with the run (or the sweep); several: here
    return run_dirs, (Path(folders[0]) / CURVES if len(folders) == 1 else Path(CURVES))


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in ("-h", "--help"):
        print("usage: " + __doc__.strip())
        return 0
    try:
        run_dirs, out = parse_arguments(arguments)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        runs = load_runs(run_dirs)
    except OSError as err:  # a metrics.jsonl that exists but cannot be read
        print(
            f"error: {err.filename}: cannot be read: {err.strerror or err}; allowed: {RUN_DIR_ALLOWED}", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    empty = [run_dir for run_dir, run in zip(run_dirs, runs) if not (run.train_loss.steps or run.val_loss.steps)]
    if empty:
        print(f"error: {empty[0]}: its {METRICS} holds no loss yet; allowed: {RUN_DIR_ALLOWED}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        draw(runs, out)
    except OSError as err:
        print(f"error: out={out}: cannot be written: {err.strerror or err}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"{out}: {len(run_dirs)} run{'s' * (len(run_dirs) != 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
