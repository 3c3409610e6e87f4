"""Every JSON file a run writes parses with a strict parser: non-finite values are null."""

import json

import pytest

from tests.conftest import tiny_overrides, train
from trainer.reporting import strict_json
from trainer.reporting.plot.curves import read_records


def strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_run_with_faults_writes_only_strict_json(tmp_path, corpus_file):
    inject = "stability.inject=[{step: 3, target: loss, kind: nan}, {step: 5, target: grads, kind: inf}]"
    args = tiny_overrides(corpus_file, "max_iters=8", "eval_interval=4", "log_interval=1", inject)
    train(tmp_path, args)
    files = [p for p in tmp_path.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert {p.name for p in files} >= {"metrics.jsonl", "samples.jsonl", "lineage.json"}
    for path in files:
        text = path.read_text()
        if path.suffix == ".json":
            strict(text)
        else:
            [strict(line) for line in text.splitlines()]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r.get("train/loss", 0) is None] == [4]  # the NaN loss of a skipped step
    assert [r["step"] for r in logged if r.get("grad_norm", 0) is None] == [6]  # and an infinite gradient norm


def test_null_is_read_back_as_nan(tmp_path):
    (tmp_path / "m.jsonl").write_text(strict_json.dumps({"step": 1, "grad_norm": float("nan")}) + "\n")
    assert read_records(tmp_path / "m.jsonl")[0]["grad_norm"] != read_records(tmp_path / "m.jsonl")[0]["grad_norm"]
    with pytest.raises(ValueError):
        strict("NaN")
