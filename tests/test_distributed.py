"""Two CPU processes (torchrun, gloo) give the numbers of one: every example counted once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import save_checkpoint

from headcount.cli.app import main

pytestmark = pytest.mark.integration


def torchrun(*argv, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "-m", "headcount.cli", *map(str, argv)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("distributed") / "model")


# 37 examples in batches of 4: the two shards have 19 and 18, and both end unevenly.
COMMON = ["--max-examples", "37", "--batch-size", "4", "--max-length", "32", "--device", "cpu",
          "--quiet"]


def test_importance_and_metrics_match_one_process(model, glue_dir, tmp_path):
    data = ["--data-dir", glue_dir, "--split", "dev", *COMMON]
    assert main(["importance", str(model), "--task", "mrpc", *map(str, data),
                 "--out", str(tmp_path / "one.json")]) == 0
    torchrun("importance", model, "--task", "mrpc", *data, "--out", tmp_path / "two.json",
             cwd=tmp_path)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["num_examples"] == two["num_examples"] == 37
    assert (one["processes"], two["processes"]) == (1, 2)
    for row_one, row_two in zip(one["raw_scores"], two["raw_scores"], strict=True):
        assert row_two == pytest.approx(row_one, rel=1e-5, abs=1e-9)
    assert two["mean_loss"] == pytest.approx(one["mean_loss"], rel=1e-6)

    assert main(["evaluate", str(model), "--task", "mrpc", *map(str, data),
                 "--out", str(tmp_path / "one-eval.json")]) == 0
    torchrun("evaluate", model, "--task", "mrpc", *data, "--out", tmp_path / "two-eval.json",
             cwd=tmp_path)
    one, two = (json.loads((tmp_path / f"{n}-eval.json").read_text())
                for n in ("one", "two"))
    assert one["num_examples"] == two["num_examples"] == 37
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-9)


def test_finetuning_runs_in_two_processes(model, glue_dir, tmp_path):
    out = tmp_path / "tuned"
    torchrun("finetune", model, "--task", "rte", "--data-dir", glue_dir, "--max-examples", 30,
             "--batch-size", 8, "--max-length", 32, "--max-steps", 3, "--device", "cpu",
             "--quiet", "--out", out, cwd=tmp_path)
    record = json.loads((out / "metrics.json").read_text())
    assert record["processes"] == 2 and record["steps"] == 3
    assert record["eval_examples"] == 277  # each dev example scored once across processes
