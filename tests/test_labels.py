"""Mapping task labels onto the label ids of a model's head (`headcount.labels`)."""

from __future__ import annotations

import pytest
from transformers import BertConfig

from headcount.errors import DataError
from headcount.labels import map_labels, task_kind
from headcount.tasks.registry import CLASSIFICATION, REGRESSION, Task, resolve_task


def config(num_labels: int = 2, id2label: dict | None = None) -> BertConfig:
    if id2label is not None:
        return BertConfig(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    return BertConfig(num_labels=num_labels)


def glue(name: str) -> Task:
    return resolve_task(name, data_dir="unused")  # nothing is loaded


FILE = Task(name="file:data.tsv", kind=None, metric=None)


# --------------------------------------------------------------------------- GLUE


@pytest.mark.parametrize("name, num_labels", [("sst2", 2), ("rte", 2), ("cola", 2),
                                              ("mnli", 3), ("mnli-mm", 3)])
def test_glue_canonical_order_for_unnamed_heads(name, num_labels):
    raw = [i % num_labels for i in range(7)]
    assert map_labels(glue(name), raw, config(num_labels)) == (raw, "canonical GLUE order")


def test_mnli_mapped_by_name_onto_a_differently_ordered_head():
    head = config(id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    # canonical ids: entailment=0, neutral=1, contradiction=2
    labels, how = map_labels(glue("mnli"), [0, 1, 2, 2, 0], head)
    assert labels == [2, 1, 0, 0, 2]
    assert how == "by name (model id2label)"


def test_names_are_compared_case_and_space_insensitively():
    head = config(id2label={0: "Not Entailment", 1: "entailment"})
    # rte canonical: entailment=0, not_entailment=1
    assert map_labels(glue("rte"), [0, 1, 1], head)[0] == [1, 0, 0]


def test_glue_head_with_other_names_keeps_canonical_order():
    head = config(id2label={0: "negative", 1: "positive"})  # an SST-2 head used on RTE
    assert map_labels(glue("rte"), [0, 1], head) == ([0, 1], "canonical GLUE order")
    sst2_head = config(id2label={0: "NEGATIVE", 1: "POSITIVE"})
    assert map_labels(glue("sst2"), [0, 1], sst2_head)[1] == "by name (model id2label)"


@pytest.mark.parametrize("name, num_labels", [("mnli", 2), ("sst2", 3), ("rte", 1 + 2)])
def test_glue_label_count_must_match_the_head(name, num_labels):
    with pytest.raises(DataError) as error:
        map_labels(glue(name), [0, 1], config(num_labels))
    message = str(error.value)
    assert name in message and f"has {num_labels}" in message


def test_glue_regression():
    labels, how = map_labels(glue("stsb"), [0.0, 2.5, 5.0], config(1))
    assert labels == [0.0, 2.5, 5.0] and how == "regression"
    assert task_kind(glue("stsb"), config(2)) == REGRESSION


def test_regression_task_on_a_two_output_head():
    with pytest.raises(DataError, match="stsb is a regression task.*2 outputs, expected 1"):
        map_labels(glue("stsb"), [1.0, 2.0], config(2))


# --------------------------------------------------------------------------- local files


def test_file_task_kind_follows_the_head():
    assert task_kind(FILE, config(1)) == REGRESSION
    assert task_kind(FILE, config(2)) == CLASSIFICATION
    assert task_kind(FILE, config(5)) == CLASSIFICATION


@pytest.mark.parametrize("raw, expected", [
    (["1", "0", "1", " 0 "], [1, 0, 1, 0]),  # tsv/csv strings
    ([1, 0, 2], [1, 0, 2]),  # jsonl numbers
    ([1.0, 0.0, 2.0], [1, 0, 2]),  # jsonl floats that are whole numbers
    (["+1", "2"], [1, 2]),
])
def test_integer_like_file_labels_are_ids(raw, expected):
    assert map_labels(FILE, raw, config(3)) == (expected, "integer ids")


def test_fewer_label_values_than_outputs_is_fine():
    assert map_labels(FILE, ["2", "2"], config(3)) == ([2, 2], "integer ids")
    assert map_labels(FILE, ["yes", "yes"], config(2))[0] == [0, 0]


def test_string_labels_are_sorted():
    labels, how = map_labels(FILE, ["pos", "neg", "pos", "neutral"], config(3))
    assert labels == [2, 0, 2, 1]
    assert how == "sorted label values (neg=0, neutral=1, pos=2)"


def test_string_labels_by_name_when_the_head_names_them():
    head = config(id2label={0: "POSITIVE", 1: "NEGATIVE"})
    labels, how = map_labels(FILE, ["negative", "positive", "negative"], head)
    assert labels == [1, 0, 1] and how == "by name (model id2label)"
    assert map_labels(FILE, ["Negative", "Positive"], head)[0] == [1, 0]


@pytest.mark.parametrize("raw, head, expected", [
    (["1", "0", " 0", "1 "], config(2), [1, 0, 0, 1]),
    (["negative", "positive", "Positive"],
     config(id2label={0: "POSITIVE", 1: "NEGATIVE"}), [1, 0, 0]),
])
def test_spellings_of_one_label_are_one_label(raw, head, expected):
    assert map_labels(FILE, raw, head)[0] == expected


def test_default_head_names_are_not_names():
    # LABEL_0/LABEL_1 mean nothing: "label_1" is not mapped by name but sorted
    head = config(2)
    assert head.id2label[0] == "LABEL_0"
    assert map_labels(FILE, ["b", "a"], head)[0] == [1, 0]


def test_too_many_label_values():
    raw = [str(i % 5) for i in range(20)]
    with pytest.raises(DataError) as error:
        map_labels(FILE, raw, config(2))
    message = str(error.value)
    assert "5 label values (0, 1, 2, 3, 4)" in message and "has 2 labels" in message


def test_too_many_label_values_lists_only_ten():
    raw = [f"class{i:02d}" for i in range(14)]
    with pytest.raises(DataError, match=r"14 label values \(class00, .*class09, \.\.\.\)"):
        map_labels(FILE, raw, config(3))


@pytest.mark.parametrize("raw, bad", [(["0", "2"], "[2]"), (["-1", "1"], "[-1]"),
                                      ([5, 7], "[5, 7]")])
def test_integer_ids_out_of_range(raw, bad):
    with pytest.raises(DataError) as error:
        map_labels(FILE, raw, config(2))
    assert f"label ids {bad} outside 0..1" in str(error.value)


def test_regression_file_labels_become_floats():
    labels, how = map_labels(FILE, ["0.5", "3", 4, 2.25], config(1))
    assert labels == [0.5, 3.0, 4.0, 2.25]
    assert all(isinstance(label, float) for label in labels)
    assert how == "regression"


@pytest.mark.parametrize("bad", ["high", "", "1,5"])
def test_regression_labels_must_be_numeric(bad):
    with pytest.raises(DataError) as error:
        map_labels(FILE, ["1.0", bad], config(1))
    assert repr(bad) in str(error.value) and "not a number" in str(error.value)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_regression_labels_must_be_finite(bad):
    with pytest.raises(DataError, match=bad):
        map_labels(FILE, ["1.0", bad], config(1))
