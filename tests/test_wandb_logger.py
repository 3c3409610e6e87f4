"""The wandb logger, offline: every metrics.jsonl record lands as one history row of a wandb run in
the run folder, the run's config is the resolved config, a resume continues the same run, and
nothing is written to the working directory.

The records are read back from the run's `.wandb` file (see `wandb_records`).
"""

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import wandb
from omegaconf import OmegaConf
from wandb import env as wandb_env

from tests.conftest import tiny_overrides, train
from trainer import build
from trainer.errors import ConfigError
from trainer.reporting.callbacks import Callback
from trainer.reporting.wandb_logger import WandbLoggerConfig, WandbMode

# --- reading a .wandb file ---------------------------------------------------------------------
# The file is a log in LevelDB's format: a 7-byte file header (":W&B", magic, version), then 32 KiB
# blocks of chunks, each a 7-byte header (checksum: CRC-32 of the chunk's type byte and its data,
# length, type) and its data. A record that does not fit in a block's rest is split into FIRST,
# MIDDLE... LAST chunks; a block's last bytes too few for a chunk header are zero padding. Each
# record is a serialized wandb `Record` protobuf.
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """The protobuf records of a `.wandb` file, in order."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    ident, _, _ = FILE_HEADER.unpack_from(data)
    assert ident == b":W&B", path
    records, pending, offset = [], b"", FILE_HEADER.size
    while offset + CHUNK_HEADER.size <= len(data):
        if BLOCK - offset % BLOCK < CHUNK_HEADER.size:  # the block's zero padding
            offset += BLOCK - offset % BLOCK
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        chunk = data[offset + CHUNK_HEADER.size : offset + CHUNK_HEADER.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"corrupt chunk at {offset} in {path}"
        offset += CHUNK_HEADER.size + length
        pending += chunk
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_runs(run_dir: Path) -> list[list]:
    """The records of each offline wandb run in the run folder, in the order they started."""
    # A finished run's file is complete only once wandb's service has closed it, which `finish` does
    # not wait for; `teardown` waits for the service to exit (the next run starts a new one).
    wandb.teardown()
    runs = [wandb_records(path) for path in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    return sorted(runs, key=lambda records: of_type(records, "run")[0].start_time.ToNanoseconds())


def of_type(records: list, kind: str) -> list:
    return [getattr(record, kind) for record in records if record.WhichOneof("record_type") == kind]


def history_rows(records: list) -> list[dict]:
    """The logged rows, without wandb's own keys (`_step`, `_runtime`, `_timestamp`)."""
    rows = []
    for history in of_type(records, "history"):
        items = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in history.item}
        rows.append({key: value for key, value in items.items() if not key.startswith("_")})
    return rows


def is_samples(row: dict) -> bool:
    """A row of an evaluation's samples table (its keys are `samples/...`)."""
    return any(key.split("/")[0] == "samples" for key in row)


def run_config(records: list) -> dict:
    (run,) = of_type(records, "run")
    return {item.key: json.loads(item.value_json) for item in run.config.update if item.key != "_wandb"}


def jsonl_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same(a: dict, b: dict) -> bool:
    """Records equal value for value, NaN equal to NaN (metrics.jsonl writes a NaN as null)."""

    def nan(x) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))

    return a.keys() == b.keys() and all(x == y or (nan(x) and nan(y)) for x, y in ((a[k], b[k]) for k in a))


# --- training with the logger attached ------------------------------------------------------------


class EventProbe(Callback):
    """An event with a text and a NaN at step `step`, as a stability event would carry."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.state.step == self.step:
            record = {"event": "probe", "note": "text", "value": float("nan")}
            trainer.callbacks.on_event(trainer, "probe", record)


MAKE_CALLBACKS = build.make_callbacks
WANDB = ("logger=[console,jsonl,wandb]", "logger.wandb.tags=[test]")


def with_probe(monkeypatch, probe_step: int) -> None:
    """build_trainer attaches an EventProbe after the loggers it builds from the config."""

    def make_callbacks(*args):
        callbacks = MAKE_CALLBACKS(*args)
        callbacks.add_callback(EventProbe(probe_step))
        return callbacks

    monkeypatch.setattr(build, "make_callbacks", make_callbacks)


def test_every_record_and_the_config_land_in_the_run_and_a_resume_continues_it(
    tmp_path, corpus_file, monkeypatch, capfd
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_dir = tmp_path / "run"
    with_probe(monkeypatch, probe_step=3)
    first, _ = train(run_dir, tiny_overrides(corpus_file, *WANDB, "max_iters=8", "eval_interval=4", "log_interval=2"))

    (records,) = offline_runs(run_dir)
    (run,) = of_type(records, "run")
    run_id = first.callbacks.state_dict().get("wandb_run_id")
    assert run.run_id == run_id and run.project == "unmasking-lab" and not run.run_group
    assert run.display_name == "run" and list(run.tags) == ["test"]
    assert run_config(records) == OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    jsonl, rows = jsonl_records(run_dir), history_rows(records)
    # each evaluation's samples are a table row of their own (tests/test_sample.py reads them)
    sample_rows = [row for row in rows if is_samples(row)]
    rows = [row for row in rows if not is_samples(row)]
    assert [row["step"] for row in sample_rows] == [0, 4, 8]
    assert len(rows) == len(jsonl) and all(same(row, record) for row, record in zip(rows, jsonl))
    logged = [row for row in rows if "grad_norm" in row]
    assert [row["step"] for row in logged] == [2, 4, 6, 8]  # one row per log step
    assert [row["step"] for row in rows if "val/loss" in row] == [0, 4, 8]
    assert [row["note"] for row in rows if row.get("event") == "probe"] == ["text"]
    assert [exit.exit_code for exit in of_type(records, "exit")] == [0]
    checkpoint = torch.load(run_dir / "checkpoints" / "ckpt_0000008.pt", weights_only=True)
    assert checkpoint["state"]["wandb_run_id"] == run_id

    monkeypatch.setattr(build, "make_callbacks", MAKE_CALLBACKS)
    resumed, _ = train(
        run_dir, tiny_overrides(corpus_file, *WANDB, "max_iters=12", "eval_interval=4", "log_interval=2", "resume=auto")
    )

    assert resumed.callbacks.state_dict().get("wandb_run_id") == run_id
    _, records = offline_runs(run_dir)  # the resume's own file, with the same run id
    (run,) = of_type(records, "run")
    assert run.run_id == run_id and run.resume
    continued = [record for record in jsonl_records(run_dir) if record["step"] > 8]
    rows = [row for row in history_rows(records) if not is_samples(row)]
    assert len(rows) == len(continued) and all(same(row, record) for row, record in zip(rows, continued))
    assert [row["step"] for row in rows if "val/loss" in row] == [12]
    checkpoint = torch.load(run_dir / "checkpoints" / "ckpt_0000012.pt", weights_only=True)
    assert checkpoint["state"]["wandb_run_id"] == run_id

    assert list(cwd.iterdir()) == []  # wandb wrote only into the run folder
    out, err = capfd.readouterr()
    # silent (the console belongs to the console logger) but for the line saying how to sync the run
    said = [line for line in (out + err).splitlines() if "wandb" in line]
    assert said and all(line.startswith("wandb: offline run in ") and "wandb sync" in line for line in said)


# A training that raises: the logger started, a record logged, then an exception ends the process.
FAILING_TRAINING = """
import sys
from pathlib import Path
from types import SimpleNamespace

from trainer.reporting.wandb_logger import WandbLoggerConfig

trainer = SimpleNamespace(state=SimpleNamespace(step=0))
logger = WandbLoggerConfig().build(Path(sys.argv[1]), {"seed": 1})
logger.on_train_start(trainer)
logger.on_log(trainer, {"step": 2, "train/loss": 1.5})
raise RuntimeError("the trainer failed")
"""


def test_an_exception_still_finishes_the_run_with_its_exit_code(tmp_path):
    """A training that raises never reaches on_train_end; wandb's exit handler finishes the run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # its own wandb service, as a training process has, not the one this test process may have started
    environment = {name: value for name, value in os.environ.items() if name != wandb_env.SERVICE}
    command = [sys.executable, "-c", FAILING_TRAINING, str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 1 and "the trainer failed" in result.stderr

    (records,) = offline_runs(run_dir)
    assert history_rows(records) == [{"step": 2, "train/loss": 1.5}]
    assert [exit.exit_code for exit in of_type(records, "exit")] == [1]


def fake_trainer() -> SimpleNamespace:
    """What the logger reads from a trainer."""
    return SimpleNamespace(state=SimpleNamespace(step=4), curriculum=SimpleNamespace(stage=0, stale_count=0), lr=1e-3)


def test_a_disabled_or_unstarted_logger_writes_nothing(tmp_path):
    trainer = fake_trainer()
    unstarted = WandbLoggerConfig().build(tmp_path, {}, sweep=None)
    unstarted.on_eval(trainer, {"val/loss": 1.0})  # an eval_only evaluation: no run was started
    unstarted.close()
    disabled = WandbLoggerConfig(mode=WandbMode.disabled).build(tmp_path, {}, sweep=None)
    disabled.on_train_start(trainer)
    disabled.on_log(trainer, {"step": 4, "train/loss": 1.0})
    disabled.on_train_end(trainer)
    assert list(tmp_path.iterdir()) == [] and disabled.state_dict()["wandb_run_id"] is None


def test_a_run_wandb_cannot_start_is_one_line_naming_the_mode(tmp_path, monkeypatch):
    def unreachable(**arguments):
        raise wandb.errors.CommError("the server did not answer")

    monkeypatch.setattr(wandb, "init", unreachable)
    logger = WandbLoggerConfig().build(tmp_path, {}, sweep=None)
    with pytest.raises(ConfigError) as err:
        logger.on_train_start(fake_trainer())
    assert err.value.key == "logger.wandb.mode" and "the server did not answer" in err.value.problem


# --- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,key",
    [
        ({"project": ""}, "logger.wandb.project"),
        ({"project": "  "}, "logger.wandb.project"),
        ({"project": "a/b"}, "logger.wandb.project"),
        ({"project": "x" * 129}, "logger.wandb.project"),
        ({"entity": ""}, "logger.wandb.entity"),
        ({"group": " "}, "logger.wandb.group"),
        ({"name": ""}, "logger.wandb.name"),
        ({"tags": ["ok", ""]}, "logger.wandb.tags[1]"),
        ({"tags": ["t" * 65]}, "logger.wandb.tags[0]"),
    ],
)
def test_a_value_wandb_would_refuse_is_a_config_error(values, key):
    with pytest.raises(ConfigError) as err:
        WandbLoggerConfig(**values)
    assert err.value.key == key and err.value.allowed


def test_the_run_is_named_after_its_folder_and_grouped_by_its_sweep(tmp_path):
    record = {"seed": 1}
    job = WandbLoggerConfig().build(tmp_path / "3", record, sweep="masking_sweep").init_arguments(None)
    assert job["group"] == "masking_sweep" and job["name"] == "3" and job["config"] is record
    assert job["dir"] == tmp_path / "3" and job["mode"] == "offline" and "id" not in job
    chosen = WandbLoggerConfig(group="g", name="n", tags=["a"]).build(tmp_path, record, sweep="s")
    arguments = chosen.init_arguments("abc123")
    assert (arguments["group"], arguments["name"], arguments["tags"]) == ("g", "n", ["a"])
    assert (arguments["id"], arguments["resume"]) == ("abc123", "allow")
    single = WandbLoggerConfig().build(tmp_path / "run", record, sweep=None).init_arguments(None)
    assert single["group"] is None


def test_online_without_credentials_is_refused_before_training_and_without_a_prompt(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no credentials file
    with pytest.raises(ConfigError) as err:
        WandbLoggerConfig(mode=WandbMode.online).build(tmp_path, {}, sweep=None)
    assert err.value.key == "logger.wandb.mode" and "offline" in err.value.allowed
