"""What ran: a copy of the code and its environment in the run folder, for reproducing a result.

* `source/`: the packages' Python files and the conf/ YAML files, as they were when this run
  (or its latest resume) started;
* `git.txt` (commit, branch) and `git.diff` (uncommitted changes to tracked files), when the code
  is a git checkout;
* `environment.txt`: Python, torch, CUDA, and the versions of the dependencies.
"""

import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) holding the packages
PACKAGES = ("trainer", "models", "masking", "stability")
DEPENDENCIES = ("hydra-core", "omegaconf", "pydantic", "numpy", "rich", "wandb", "matplotlib")


def source_files() -> list[Path]:
    """The files that define a run, relative to ROOT: the packages' Python files and conf/."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += (ROOT / "conf").rglob("*.yaml")
    return sorted(p.relative_to(ROOT) for p in files if "__pycache__" not in p.parts)


def write_snapshot(run_dir: Path) -> None:
    """Write source/, git.txt and git.diff (in a git checkout) and environment.txt into `run_dir`."""
    source = run_dir / "source"
    if source.exists():  # a resume: the code that runs now replaces the earlier copy
        shutil.rmtree(source)
    for relative in source_files():
        target = source / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    commit = _git("rev-parse", "HEAD") if _git("rev-parse", "--show-toplevel") == str(ROOT) else None
    if commit is not None:
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
        untracked = _git("ls-files", "--others", "--exclude-standard") or ""
        listed = "".join(f"untracked: {name}\n" for name in untracked.splitlines())  # in source/, not in git.diff
        (run_dir / "git.txt").write_text(f"commit: {commit}\nbranch: {branch}\n{listed}")
        (run_dir / "git.diff").write_text(_git("diff", "HEAD", strip=False) or "")
    (run_dir / "environment.txt").write_text(environment())


def environment() -> str:
    lines = [
        f"python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"platform: {platform.platform()}",
        f"torch: {torch.__version__}",
        f"cuda: {torch.version.cuda or 'none'} (available: {torch.cuda.is_available()})",
    ]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name()}")
    for name in DEPENDENCIES:
        try:
            lines.append(f"{name}: {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    return "\n".join(lines) + "\n"


def _git(*args: str, strip: bool = True) -> str | None:
    """The output of a git command run in ROOT; None when ROOT is not a git checkout (or no git)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() if strip else done.stdout
