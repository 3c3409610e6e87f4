"""Weights & Biases: the records of metrics.jsonl, the resolved config and the run's identity in a
wandb run whose files live inside the run folder (`<run_dir>/wandb/`).

The default mode is offline: nothing leaves the machine, and `wandb sync <run_dir>/wandb`
uploads a run later. A resumed training continues the same wandb run: its id is kept in the train
state, so every checkpoint carries it.

`wandb` is imported inside the functions that use it: its import takes most of a second, which every
command would otherwise pay, since the config schema imports this module.
"""

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import ConfigError
from trainer.reporting.callbacks import Callback, eval_record

if TYPE_CHECKING:
    import wandb

# what wandb refuses in a project name, and the longest tag it accepts (wandb.Settings validates both)
PROJECT_FORBIDDEN = "/\\#?%:"
MAX_PROJECT_LENGTH = 128
MAX_TAG_LENGTH = 64
# the x-axis of every chart: the optimizer step each record carries
STEP_KEY = "step"


class WandbMode(str, Enum):
    offline = "offline"  # written to <run_dir>/wandb/ only; `wandb sync` uploads it later
    online = "online"  # streamed to the W&B server; needs credentials (WANDB_API_KEY or `wandb login`)
    disabled = "disabled"  # every call is a no-op: the logger stays configured, nothing is written


@dataclass
class WandbLoggerConfig:
    """`logger: [..., wandb]`: where the wandb run goes and what it is called."""

    mode: WandbMode = WandbMode.offline
    project: str = "unmasking-lab"  # the W&B project the run belongs to
    entity: str | None = None  # a W&B user or team; null: the account's default entity
    group: str | None = None  # null: a sweep's jobs share a group named after the sweep; a single run has none
    tags: list[str] = field(default_factory=list)  # labels to filter runs by
    name: str | None = None  # the run's display name; null: the run folder's name

    def __post_init__(self):
        self._check_project()
        for key in ("entity", "group", "name"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ConfigError(f"logger.wandb.{key}", f"{value!r} is blank", "a non-empty name, or null")
        for index, tag in enumerate(self.tags):
            problem = _length_problem(tag, MAX_TAG_LENGTH)
            if problem:
                raise ConfigError(f"logger.wandb.tags[{index}]", problem, f"1 to {MAX_TAG_LENGTH} characters")

    def _check_project(self) -> None:
        key, allowed = "logger.wandb.project", f"1 to {MAX_PROJECT_LENGTH} characters, none of {PROJECT_FORBIDDEN}"
        problem = _length_problem(self.project, MAX_PROJECT_LENGTH)
        if problem:
            raise ConfigError(key, problem, allowed)
        forbidden = sorted(set(PROJECT_FORBIDDEN) & set(self.project))
        if forbidden:
            raise ConfigError(key, f"{self.project!r} contains {' '.join(forbidden)}", allowed)

    def build(self, run_dir: Path, config_record: dict, sweep: str | None = None) -> "WandbLogger":
        """The logger of the run in `run_dir`; `config_record` (the resolved config as plain data)
        becomes the wandb run's config, `sweep` (the sweep's name for a job of a sweep) its default group.

        Online mode checks the credentials here, before training starts, instead of letting wandb ask
        for them interactively in the middle of a run."""
        if self.mode == WandbMode.online:
            require_credentials()
        return WandbLogger(self, run_dir, config_record, sweep)


def _length_problem(value: str, longest: int) -> str | None:
    """What is wrong with a name wandb limits to 1..`longest` characters, or None."""
    if not value.strip():
        return f"{value!r} is blank"
    if len(value) > longest:
        return f"{value[:20]!r}... has {len(value)} characters"
    return None


def require_credentials() -> None:
    """ConfigError unless W&B credentials are configured (environment, netrc or settings file)."""
    import wandb

    try:
        # prompt=False: never an interactive prompt; verify=False: no request to the server
        logged_in = wandb.login(prompt=False, verify=False)
    except wandb.errors.Error as err:  # credentials found but malformed
        raise ConfigError(
            "logger.wandb.mode", f"online, and the W&B credentials are unusable: {err}", "offline"
        ) from None
    if not logged_in:
        raise ConfigError(
            "logger.wandb.mode",
            "online needs W&B credentials and none are configured",
            "offline (upload later with `wandb sync`), or online after `wandb login` or with WANDB_API_KEY set",
        )


class WandbLogger(Callback):
    """Logs the records metrics.jsonl holds, one wandb history row per record, at log and eval steps only.

    Every record carries its optimizer step under `step`, declared as the x-axis of every metric.
    wandb's own step (`step=` of `log`) is left to count rows: it drops a row whose step is not above
    the last one, and a log and an evaluation at the same step, a rollback to an earlier step, or a
    resume after a kill all repeat or revisit steps. So every record lands, in order, as in the JSONL
    file. Unlike metrics.jsonl, the rows a killed run logged after the checkpoint its resume continues
    from stay in the wandb run (wandb cannot take rows back), so those steps appear twice; a
    pre-emption checkpoints at its last step and leaves none. Offline, each start or resume writes its
    own `offline-run-*` folder with the same run id; `wandb sync <run_dir>/wandb` uploads them, in
    the order they started, into one run.
    """

    def __init__(self, config: WandbLoggerConfig, run_dir: Path, config_record: dict, sweep: str | None = None):
        self.config, self.run_dir, self.config_record, self.sweep = config, run_dir, config_record, sweep
        self.run: "wandb.Run | None" = None
        self.run_id: str | None = None  # the wandb run this training continues (kept in checkpoints)

    def init_arguments(self, run_id: str | None) -> dict[str, Any]:
        """The `wandb.init` arguments for this run: a new run (`run_id` None) or the run `run_id` continues."""
        import wandb

        config = self.config
        arguments = {
            "dir": self.run_dir,  # wandb's files go into <run_dir>/wandb/, never the working directory
            "mode": config.mode.value,
            "project": config.project,
            "entity": config.entity,
            "group": config.group if config.group is not None else self.sweep,
            "tags": list(config.tags),
            "name": config.name if config.name is not None else self.run_dir.name,
            "config": self.config_record,
            # this logger owns its run: another run open in the process (an earlier in-process job) is left alone
            "reinit": "create_new",
            # console="off": the console logger owns stdout (a live progress bar), wandb captures none of it;
            # silent: no banner, links or summary from wandb itself
            "settings": wandb.Settings(console="off", silent=True),
        }
        if run_id is not None:  # continue that run (offline: a new file with the same id, merged by `wandb sync`)
            arguments.update(id=run_id, resume="allow")
        return arguments

    def on_train_start(self, trainer) -> None:
        """Start the wandb run, or continue the one a resumed checkpoint names."""
        if self.run is not None:
            return
        import wandb

        # it exists already when the trainer starts; wandb looks for a git repository there (and warns
        # on the console when the folder is missing)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(**self.init_arguments(self.run_id))
        except wandb.errors.Error as err:  # online: the server unreachable, the credentials refused, ...
            raise ConfigError(
                "logger.wandb.mode", f"{self.config.mode.value}, and wandb could not start the run: {err}", "offline"
            ) from None
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        if self.config.mode != WandbMode.disabled:  # a disabled run's id names nothing to continue
            self.run_id = self.run.id

    def on_log(self, trainer, record: dict) -> None:
        self._log(trainer, record)

    def on_eval(self, trainer, record: dict) -> None:
        self._log(trainer, eval_record(trainer, record))  # the JSONL logger's evaluation line

    def on_samples(self, trainer, samples: list[dict]) -> None:
        """Each evaluation's samples as a table (`samples`) of its step's row: step, sample, text, ..."""
        import wandb

        columns = [key for key in samples[0] if key != "settings"]
        rows = [[trainer.state.step, *(record[key] for key in columns)] for record in samples]
        self._log(
            trainer, {STEP_KEY: trainer.state.step, "samples": wandb.Table(columns=["step", *columns], data=rows)}
        )

    def on_event(self, trainer, message: str, record: dict) -> None:
        # strings (an event's name) become text cells of the row; wandb charts only the numbers
        self._log(trainer, {STEP_KEY: trainer.state.step, **record})

    def on_train_end(self, trainer) -> None:
        self.close(exit_code=0)
        if self.config.mode == WandbMode.offline:  # say where the run is, and how it reaches wandb
            print(
                f"wandb: offline run in {self.run_dir / 'wandb'}; upload it with `wandb sync {self.run_dir / 'wandb'}`"
            )

    def close(self, exit_code: int = 1) -> None:
        """Finish the wandb run, marked failed for a non-zero `exit_code` (the default: a training that
        did not reach `on_train_end`); nothing if none is open.

        A training that raises never reaches `on_train_end`. Its run is still finished: when wandb
        starts its service process (at a process's first run), it hooks `sys.exit` and `sys.excepthook`
        and registers an exit handler that hands the process's exit code to the service, which writes
        the run's last records and closes it
        (a pre-emption's 143 or 130, 1 for an exception). Call `close` to finish earlier, e.g. when the
        process goes on after a failed training."""
        if self.run is None:
            return
        run, self.run = self.run, None
        run.finish(exit_code=exit_code)

    def _log(self, trainer, record: dict) -> None:
        if self.run is None:  # never started (an eval_only evaluation) or already finished
            return
        self.run.log(record)

    def state_dict(self) -> dict:
        return {"wandb_run_id": self.run_id}

    def load_state_dict(self, state: dict) -> None:
        self.run_id = state.get("wandb_run_id")
