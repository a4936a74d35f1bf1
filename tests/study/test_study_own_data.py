"""A study's [[tasks]] on one's own data: `labels` and `problem` reach the study's
fine-tuning, which builds the head as `headcount finetune --labels/--problem` does."""

from __future__ import annotations

import json

from conftest import WIKITEXT_DIR, WORDS, save_checkpoint

from headcount.study.config import parse_config
from headcount.study.units import Run, UnitContext, finetune_unit

STUDY = """
[study]
name = "own"
device = "cpu"

[[models]]
name = "tiny"
path = "{checkpoint}"

[[tasks]]
name = "sentiment"
task = "file:{data}"
text_column = "text"
label_column = "label"
labels = ["pos", "neutral", "neg"]

[[tasks]]
name = "stars"
task = "file:{data}"
text_column = "text"
label_column = "stars"
problem = "regression"

[pretrain]
text = "{text}"

[finetune]
batch_size = 4
max_length = 16
max_steps = 2
"""


def test_labels_and_problem_of_a_task_build_the_fine_tuned_head(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model", head="mlm")  # no classification head
    data = tmp_path / "own.tsv"
    classes = ["neg", "neutral", "pos"]
    data.write_text("text\tlabel\tstars\n" + "".join(
        f"{WORDS[i]} {WORDS[i + 1]}\t{classes[i % 3]}\t{1 + i % 5}\n" for i in range(12)))
    config = parse_config(STUDY.format(checkpoint=checkpoint, data=data,
                                       text=WIKITEXT_DIR / "wiki.valid.tokens"))
    run = Run(config, tmp_path / "run", progress=False)
    sentiment, stars = config.tasks
    tuned = finetune_unit(UnitContext(run, config.models[0], 0, sentiment))
    saved = json.loads((tuned / "config.json").read_text())
    # The order given, not the sorted one (neg, neutral, pos).
    assert saved["id2label"] == {"0": "pos", "1": "neutral", "2": "neg"}
    # Whole numbers would be classes; problem = "regression" makes them one output.
    tuned = finetune_unit(UnitContext(run, config.models[0], 0, stars))
    saved = json.loads((tuned / "config.json").read_text())
    assert len(saved["id2label"]) == 1
    assert saved["problem_type"] == "regression"
    metrics = json.loads((tuned / "metrics.json").read_text())["metrics"]
    assert {"pearson", "spearman"} <= set(metrics)
