"""The run files part: the run folder, its checkpoints, the config record, and the last good state.

Before the first checkpoint (step 0: nothing learnt yet) the last good state is kept in memory, so
a rollback at the first evaluation has somewhere to go. Under several processes rank 0 alone writes;
the other ranks read back what it wrote.
"""

import copy
from collections.abc import Callable
from pathlib import Path

from trainer.checkpoint import CheckpointDirectory, load_checkpoint
from trainer.reporting.timing import PhaseTimer
from trainer.vocab import Vocabulary

EVALUATIONS = "evaluations.jsonl"  # what eval_only runs write into the run folder


class RunFiles:
    def __init__(
        self,
        run_dir: Path,
        checkpoints: CheckpointDirectory,
        record: dict,
        vocab: Vocabulary,
        timer: PhaseTimer,
        writes: bool = True,
    ):
        """`record`: the resolved config as plain data, saved in checkpoints; `writes`: this process
        writes files (rank 0)."""
        self.run_dir, self.checkpoints, self.record, self.vocab = run_dir, checkpoints, record, vocab
        self.timer, self.writes = timer, writes
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None  # the checkpoint this run continues
        self.snapshot: dict | None = None  # the last good state while no checkpoint exists yet

    def resumed(self, path: Path, payload: dict) -> None:
        """This run continues the checkpoint at `path`: it is the last good state until one is saved."""
        self.last_checkpoint = self.resumed_from = path
        self.snapshot = copy.deepcopy(payload)

    def keep_in_memory(self, payload: Callable[[], dict]) -> None:
        """Before any checkpoint exists, the state as it is now is the last good one."""
        if self.snapshot is None and self.last_checkpoint is None:
            self.snapshot = copy.deepcopy(payload())

    def save(self, payload: Callable[[], dict], step: int, is_best: bool) -> Path | None:
        """Write the checkpoint of `step` (None at step 0: the state is kept in memory instead)."""
        if step == 0:  # nothing learnt yet: keep the state in memory for an early rollback
            self.snapshot = copy.deepcopy(payload())
            return None
        if self.writes:
            if not is_best and self.best_in_memory():
                self.checkpoints.keep_as_best(self.snapshot)
            self.last_checkpoint = self.checkpoints.save(payload(), step, is_best)
        else:  # rank 0 writes it; a rollback here reads it back
            self.last_checkpoint = self.checkpoints.path_of(step)
        self.snapshot = None
        self.timer.lap("checkpoint")
        return self.last_checkpoint

    def best_in_memory(self) -> bool:
        """Whether the best state is step 0's, which is kept in memory only: a run whose later
        evaluations are no better writes it as best.pt with its first checkpoint."""
        state = self.snapshot["state"] if self.snapshot is not None else {}
        return state.get("step") == 0 and state.get("best_step") == 0

    def append_evaluation(self, line: str) -> None:
        """eval_only: one JSON line appended to evaluations.jsonl (rank 0)."""
        if self.writes:
            path = self.run_dir / EVALUATIONS
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as file:
                file.write(line + "\n")

    def saved_at(self, step: int) -> bool:
        return self.last_checkpoint == self.checkpoints.path_of(step)

    def last_good(self) -> tuple[dict, str]:
        """The payload of the last good state and where it comes from (for the rollback's line)."""
        latest = self.checkpoints.latest()
        if latest is not None:
            return load_checkpoint(latest), str(latest)
        # the snapshot stays reusable: loading may adopt the tensors it is given
        return copy.deepcopy(self.snapshot), "the in-memory state of step 0"
