"""The launcher and sweeper plugins behind the opt-in presets of conf/hydra/ (the `sweeps` extra).

A preset whose plugin is not installed fails to compose; `missing_plugin` turns Hydra's report into
one line naming the plugin and the extra. For an Optuna sweep the preflight cannot list the jobs
(each trial's values are drawn while the sweep runs): `optuna_checks` gives the configs it checks
instead, the base config and every parameter of the search space at each of its bounds, read with
the plugin's own parser of `hydra.sweeper.params` and the command line's sweep overrides.
"""

import importlib
import re
import shutil

from omegaconf import DictConfig, OmegaConf

from trainer.errors import ConfigError

EXTRA = "pip install -e '.[sweeps]'"
# The options of Hydra's groups that a plugin provides -> (its pip name, its module)
PLUGINS = {
    "hydra/launcher/joblib": ("hydra-joblib-launcher", "hydra_plugins.hydra_joblib_launcher"),
    "hydra/launcher/submitit_local": ("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher"),
    "hydra/launcher/submitit_slurm": ("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher"),
    "hydra/sweeper/optuna": ("hydra-optuna-sweeper", "hydra_plugins.hydra_optuna_sweeper"),
}
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def missing_plugin(report: str) -> str | None:
    """The one line for Hydra's report of a config it could not find, when that config is a plugin's
    option whose plugin is not installed (asked for directly, or by a preset of conf/hydra/)."""
    found = re.search(r"(?:In '(hydra/\w+/[^']+)': )?Could not (?:find|load) '(hydra/\w+/[^']+)'", report)
    if found is None or found.group(2) not in PLUGINS:
        return None
    preset, option = found.group(1), found.group(2)
    package, module = PLUGINS[option]
    if installed(module):
        return None
    group, name = option.rsplit("/", 1)
    if preset is not None and preset.startswith(group + "/"):
        name = f"{preset.rsplit('/', 1)[1]} ({name})"
    return f"{group}: {name} needs the plugin {package}; allowed: {EXTRA}"


def is_optuna_sweep(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "hydra.sweeper._target_") == OPTUNA_SWEEPER


def check_launcher(cfg: DictConfig) -> None:
    """The launcher's and the sweeper's settings the plugins would only refuse (with a traceback)
    once the sweep has started. On SLURM a pre-empted or timed-out job is requeued and runs the same
    command again in its folder: only resume=auto continues it there (a fresh run would be refused)."""
    slurm = OmegaConf.select(cfg, "hydra.launcher._target_") == SLURM_LAUNCHER
    if slurm and cfg.resume != "auto":
        raise ConfigError(
            "resume",
            f"{cfg.resume} on SLURM, where a requeued job runs the same command in its folder again",
            "resume=auto with hydra/launcher=slurm",
        )
    if slurm and shutil.which("srun") is None:
        raise ConfigError("hydra/launcher", "SLURM's srun is not on this machine", "slurm_local to try the sweep here")
    for key, low, allowed in LAUNCHER_RANGES:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ConfigError(key, f"{value} is not allowed", allowed)
    if OmegaConf.select(cfg, "hydra.launcher.n_jobs") == 0:
        raise ConfigError("hydra.launcher.n_jobs", "0 runs no job", "an integer >= 1, or -1 for one job per CPU")


# Settings of the launchers and sweepers (when the chosen one has them): key, lowest value, allowed
LAUNCHER_RANGES = (
    ("hydra.launcher.timeout_min", 1, "an integer >= 1 (minutes a job may run)"),
    ("hydra.launcher.gpus_per_task", 0, "an integer >= 0"),
    ("hydra.launcher.cpus_per_task", 1, "an integer >= 1"),
    ("hydra.launcher.tasks_per_node", 1, "an integer >= 1"),
    ("hydra.sweeper.n_trials", 1, "an integer >= 1"),
    ("hydra.sweeper.n_jobs", 1, "an integer >= 1"),
)


def optuna_checks(cfg: DictConfig, plain: list[str], overrides: list[str]) -> list[list[str]]:
    """The overrides of the configs to check for an Optuna sweep of `cfg` (composed from the
    command's `plain` overrides, those that are no sweep): that base config and, for each parameter
    of the search space, the base with that parameter at each end of its range (each choice of a
    categorical one)."""
    checks = [plain]
    for key, values in search_space_bounds(cfg, overrides).items():
        checks += [[*plain, f"{key}={_override_value(value)}"] for value in values]
    return checks


def search_space_bounds(cfg: DictConfig, overrides: list[str]) -> dict[str, list]:
    """{key: the values at the ends of its distribution} for the search space the Optuna sweeper will
    build: hydra.sweeper.params and the sweep overrides of the command line, less the keys the
    command line fixes (as the plugin does)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    declared = cfg.hydra.sweeper.params  # null when the search space is all on the command line
    params = OmegaConf.to_container(declared, resolve=True) if declared is not None else {}
    task = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()] + task)
    except Exception as err:  # the plugin's parser and optuna's distributions raise several types
        problem = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            "hydra.sweeper.params", problem, "choice(...), range(...), interval(...) or tag(log, interval(...))"
        ) from None
    return {key: _ends(dist) for key, dist in distributions.items() if key not in fixed}


def _ends(distribution) -> list:
    if hasattr(distribution, "choices"):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _override_value(value) -> str:
    """A value as the override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
