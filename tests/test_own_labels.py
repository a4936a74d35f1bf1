"""Fine-tuning on one's own data: classes from the training labels, string labels, regression.

A checkpoint without a trained classification head gets a head built for the data: its
classes (named in the saved config, so later commands map labels by name) or one regression
output. A checkpoint with a trained head keeps its own labels.
"""

from __future__ import annotations

import json

import pytest
from conftest import WORDS, save_checkpoint

from headcount.cli import main
from headcount.errors import ConfigError, DataError
from headcount.labels import label_scheme
from headcount.tasks.registry import resolve_task

TRAIN = ["--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--max-length", "16",
         "--lr", "1e-3", "--device", "cpu", "--quiet"]


def file_task(name="file:x.tsv"):
    return resolve_task(name, text_column="text", label_column="label")


# --------------------------------------------------------------------------- the scheme


def test_numbers_are_classes_in_numeric_order():
    scheme = label_scheme(file_task(), ["10", "2", "1", "2", 10])
    assert scheme.problem == "classification" and scheme.classes == ("1", "2", "10")
    assert scheme.config_overrides()["id2label"] == {0: "1", 1: "2", 2: "10"}


def test_strings_are_classes_in_sorted_order_and_labels_give_another():
    raw = ["pos", "neg", "neutral", "pos"]
    assert label_scheme(file_task(), raw).classes == ("neg", "neutral", "pos")
    scheme = label_scheme(file_task(), raw, labels=("pos", "neutral", "neg"))
    assert scheme.classes == ("pos", "neutral", "neg")
    assert scheme.config_overrides()["label2id"] == {"pos": 0, "neutral": 1, "neg": 2}


def test_non_integer_numbers_are_regression_unless_told_otherwise():
    raw = [0.5, "1.25", 3, "4.0"]
    assert label_scheme(file_task(), raw).problem == "regression"
    assert label_scheme(file_task(), raw).config_overrides() == {
        "num_labels": 1, "problem_type": "regression"}
    forced = label_scheme(file_task(), raw, problem="classification")
    assert forced.classes == ("0.5", "1.25", "3", "4")
    assert label_scheme(file_task(), [0, 1, 2, 1], problem="regression").num_labels == 1
    assert label_scheme(file_task(), [0, 1, 2, 1]).problem == "classification"


@pytest.mark.parametrize(("raw", "options", "error", "message"), [
    (["a", "a"], {}, DataError, "single label value"),
    (["a", "b", "c"], {"labels": ("a", "b")}, DataError, "--labels does not list: c"),
    (["a", "b"], {"labels": ("a", "a", "b")}, ConfigError, "names a class twice"),
    (["x", 1.5], {"problem": "regression"}, DataError, "'x'.*not a number"),
    ([1.5, 2.5], {"problem": "regression", "labels": ("1", "2")}, ConfigError,
     "regression task has none"),
    (["a", "b"], {"problem": "ordinal"}, ConfigError, "Unknown problem 'ordinal'"),
])
def test_bad_label_choices_get_one_line(raw, options, error, message):
    with pytest.raises(error, match=message):
        label_scheme(file_task(), raw, **options)


def test_glue_tasks_keep_their_own_labels(glue_dir):
    task = resolve_task("sst2", data_dir=str(glue_dir))
    assert label_scheme(task, []).classes == ("negative", "positive")
    with pytest.raises(ConfigError, match="--labels is for file: and dir: tasks"):
        label_scheme(task, [], labels=("a", "b"))


# --------------------------------------------------------------------------- end to end


def write_table(path, labels, column="label"):
    rows = [f"{' '.join(WORDS[i % 40:i % 40 + 3])}\t{label}" for i, label in enumerate(labels)]
    path.write_text(f"text\t{column}\n" + "\n".join(rows) + "\n")
    return path


def finetune(base, data, out, *extra, column="label"):
    return main(["finetune", str(base), "--task", f"file:{data}", "--text-column", "text",
                 "--label-column", column, *TRAIN, *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A checkpoint with no trained classification head (a masked-LM one)."""
    return save_checkpoint(tmp_path_factory.mktemp("base") / "mlm", head="mlm")


def saved_labels(out) -> dict:
    config = json.loads((out / "config.json").read_text())
    return {int(i): name for i, name in config["id2label"].items()}


@pytest.mark.parametrize(("labels", "expected"), [
    ([0, 1, 2] * 8, {0: "0", 1: "1", 2: "2"}),
    (["neg", "neutral", "pos"] * 8, {0: "neg", 1: "neutral", 2: "pos"}),
    (["sport", "tech", "business", "politics", "entertainment"] * 5,
     {0: "business", 1: "entertainment", 2: "politics", 3: "sport", 4: "tech"}),
])
def test_finetune_takes_the_classes_from_the_training_split(base, tmp_path, capsys, labels,
                                                            expected):
    data = write_table(tmp_path / "data.tsv", labels)
    out = tmp_path / "tuned"
    assert finetune(base, data, out) == 0, capsys.readouterr().err
    assert saved_labels(out) == expected
    record = json.loads((out / "metrics.json").read_text())
    assert record["new_head"] and set(record["metrics"]) == {"accuracy"}
    # Every later command maps the labels by name through the saved config.
    options = ["--task", f"file:{data}", "--text-column", "text", "--label-column", "label",
               "--max-length", "16", "--device", "cpu", "--quiet"]
    scores = tmp_path / "scores.json"
    assert main(["importance", str(out), *options, "--out", str(scores)]) == 0
    assert json.loads(scores.read_text())["label_mapping"] == "by name (model id2label)"
    assert main(["evaluate", str(out), *options]) == 0
    assert f"accuracy={record['metrics']['accuracy']:.4f}" in capsys.readouterr().out
    curve = tmp_path / "curve.csv"
    assert main(["curve", str(out), *options, "--scores", str(scores), "--ratios", "0.5",
                 "--out", str(curve)]) == 0
    assert curve.read_text().count("\n") == 3  # header + 2 points


def test_labels_fix_the_order_of_the_classes(base, tmp_path):
    data = write_table(tmp_path / "data.tsv", ["neg", "neutral", "pos"] * 8)
    out = tmp_path / "tuned"
    assert finetune(base, data, out, "--labels", "pos,neutral,neg") == 0
    assert saved_labels(out) == {0: "pos", 1: "neutral", 2: "neg"}


def test_a_float_label_column_fine_tunes_a_regression_head(base, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(WORDS[i:i + 4]), "score": i / 6})
                            + "\n" for i in range(30)))
    out = tmp_path / "tuned"
    assert finetune(base, data, out, column="score") == 0
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert config["problem_type"] == "regression"
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["metrics"]) == {"pearson", "spearman", "pearson_spearman"}


def test_integer_labels_can_be_regression_when_asked(base, tmp_path):
    data = write_table(tmp_path / "data.tsv", [0, 1, 2, 3, 4] * 5)
    out = tmp_path / "tuned"
    assert finetune(base, data, out, "--problem", "regression") == 0
    assert json.loads((out / "config.json").read_text())["problem_type"] == "regression"


def test_labels_the_model_does_not_know_are_named(base, tmp_path, capsys):
    data = write_table(tmp_path / "data.tsv", ["neg", "pos"] * 10)
    out = tmp_path / "tuned"
    assert finetune(base, data, out) == 0
    other = write_table(tmp_path / "other.tsv", ["neg", "pos", "neutral", "mixed"] * 3)
    capsys.readouterr()
    code = main(["evaluate", str(out), "--task", f"file:{other}", "--text-column", "text",
                 "--label-column", "label", "--max-length", "16", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "labels that the model's classes do not include: mixed, neutral" in err
    assert "(its classes: neg, pos)" in err


def test_a_trained_head_keeps_its_labels(checkpoints, tmp_path, capsys):
    data = write_table(tmp_path / "data.tsv", [0, 1, 2] * 8)
    code = finetune(checkpoints["cls2"], data, tmp_path / "tuned")
    assert code == 2
    assert "3 label values (0, 1, 2) but the model's classification head has 2 labels" \
        in capsys.readouterr().err
