"""Metrics against scikit-learn and SciPy, and the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from headcount.errors import DataError, TaskError
from headcount.tasks.metrics import (
    MAIN_METRIC,
    accuracy,
    compute_metrics,
    f1_binary,
    matthews_corrcoef,
    pearson,
    spearman,
)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_classification_metrics_match_sklearn(seed, n_classes):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, n_classes, size=200)
    # Correlated predictions so MCC is not ~0.
    preds = np.where(rng.random(200) < 0.6, refs, rng.integers(0, n_classes, size=200))
    assert matthews_corrcoef(preds, refs) == pytest.approx(skm.matthews_corrcoef(refs, preds))
    assert accuracy(preds, refs) == pytest.approx(skm.accuracy_score(refs, preds))
    if n_classes == 2:
        assert f1_binary(preds, refs) == pytest.approx(skm.f1_score(refs, preds))


def test_mcc_by_hand():
    # tp=2, tn=1, fp=1, fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    refs = [1, 1, 1, 0, 0]
    preds = [1, 1, 0, 1, 0]
    assert matthews_corrcoef(preds, refs) == pytest.approx(1 / 6)
    assert matthews_corrcoef(refs, refs) == 1.0
    assert matthews_corrcoef([1 - r for r in refs], refs) == pytest.approx(-1.0)


def test_mcc_string_labels_and_missing_predicted_class():
    refs = ["a", "b", "c", "a", "b", "c"]
    preds = ["a", "b", "b", "a", "a", "b"]
    assert matthews_corrcoef(preds, refs) == pytest.approx(skm.matthews_corrcoef(refs, preds))


def test_zero_denominators_follow_sklearn():
    # Constant predictions: MCC 0.0; no positives anywhere: F1 0.0.
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0
    assert f1_binary([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    refs = rng.uniform(0, 5, size=300)
    preds = refs + rng.normal(0, 1.5, size=300)
    assert pearson(preds, refs) == pytest.approx(stats.pearsonr(preds, refs)[0])
    assert spearman(preds, refs) == pytest.approx(stats.spearmanr(preds, refs)[0])
    # Ties (STS-B scores are often on a 0.2 grid) go through Spearman's average ranks.
    tied = np.round(refs)
    assert spearman(preds, tied) == pytest.approx(stats.spearmanr(preds, tied)[0])


def test_compute_metrics_keys_and_means():
    refs = [0, 1, 1, 0, 1, 0, 1, 1]
    preds = [0, 1, 0, 0, 1, 1, 1, 1]
    out = compute_metrics("accuracy_f1", preds, refs)
    assert set(out) == {"accuracy", "f1", "accuracy_f1"}
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    assert out["f1"] == pytest.approx(skm.f1_score(refs, preds))
    assert out["accuracy_f1"] == pytest.approx((out["accuracy"] + out["f1"]) / 2)
    assert compute_metrics("mcc", preds, refs) == {
        "mcc": pytest.approx(skm.matthews_corrcoef(refs, preds))}
    assert compute_metrics("accuracy", preds, refs) == {"accuracy": 0.75}
    assert compute_metrics("recall@1", [5, 9, 7, 7], [5, 9, 1, 7]) == {"recall@1": 0.75}
    scores = compute_metrics("pearson_spearman", [0.1, 0.4, 0.35, 0.8], [0, 1, 2, 3])
    assert set(scores) == {"pearson", "spearman", "pearson_spearman"}
    assert scores["pearson_spearman"] == pytest.approx(
        (scores["pearson"] + scores["spearman"]) / 2)
    for metric, values in [("mcc", (preds, refs)), ("pearson_spearman", ([1, 2, 4], [1, 2, 3]))]:
        result = compute_metrics(metric, *values)
        assert all(type(v) is float for v in result.values())
        assert MAIN_METRIC[metric] in result


@pytest.mark.parametrize(("metric", "preds", "refs", "message"), [
    ("mcc", [0, 1, 0], [1, 1, 1], r"MCC is undefined.*one class"),
    ("accuracy_f1", [0, 1], [0, 0], r"F1 is undefined.*one class"),
    ("accuracy_f1", [0, 2], [0, 2], r"positive class 1"),
    ("pearson_spearman", [1.0, 2.0], [3.0, 3.0], r"all 2 references are equal"),
    ("pearson_spearman", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0], r"all 3 predictions are equal"),
    ("pearson_spearman", [1.0, math.nan], [1.0, 2.0], r"NaN"),
    ("accuracy", [], [], r"zero examples"),
    ("recall@1", [], [], r"zero examples"),
    ("mcc", [0, 1], [0, 1, 1], r"2 predictions but 3 references"),
])
def test_degenerate_sets_are_data_errors(metric, preds, refs, message):
    with pytest.raises(DataError, match=message):
        compute_metrics(metric, preds, refs)


def test_unknown_metric():
    with pytest.raises(TaskError, match=r"Unknown metric 'acc'.*Allowed"):
        compute_metrics("acc", [1], [1])
