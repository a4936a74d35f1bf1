"""Evaluation metrics of the GLUE tasks and the masked-LM task, written from their definitions.

The metric functions follow scikit-learn / SciPy conventions (MCC and F1 are 0.0 where
their denominator vanishes). `compute_metrics` is the entry point for evaluations: it also
rejects evaluation sets on which a metric says nothing (one reference class, constant
scores, no examples) with a one-line DataError, since those come from the user's data.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from headcount.choices import unknown
from headcount.errors import DataError, TaskError

MAIN_METRIC: dict[str, str] = {
    "mcc": "mcc",
    "accuracy": "accuracy",
    "accuracy_f1": "accuracy_f1",
    "pearson_spearman": "pearson_spearman",
    "recall@1": "recall@1",
}


def _pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D arrays of the same, non-zero length."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.ndim != 1 or refs.ndim != 1:
        raise DataError(
            f"Predictions and references must be 1-D, got shapes {preds.shape} and "
            f"{refs.shape}."
        )
    if len(preds) != len(refs):
        raise DataError(
            f"{len(preds)} predictions but {len(refs)} references; they must match."
        )
    if len(refs) == 0:
        raise DataError("Cannot compute a metric on zero examples.")
    return preds, refs


def accuracy(predictions, references) -> float:
    """Share of predictions equal to their reference."""
    preds, refs = _pair(predictions, references)
    return float(np.mean(preds == refs))


def matthews_corrcoef(predictions, references) -> float:
    """Matthews correlation coefficient, binary or multiclass (Gorodkin's R_K).

    With confusion matrix C over all classes seen, c = trace(C), s = n, p = predicted
    counts, t = true counts: MCC = (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t)).
    Returns 0.0 when the denominator is 0, as scikit-learn does.
    """
    preds, refs = _pair(predictions, references)
    _, codes = np.unique(np.concatenate([refs, preds]), return_inverse=True)
    codes = codes.reshape(-1)
    true_codes, pred_codes = codes[: len(refs)], codes[len(refs):]
    k = int(codes.max()) + 1
    # Python ints / float64 throughout: s^2 overflows int32 for large sets.
    t = np.bincount(true_codes, minlength=k).astype(np.float64)
    p = np.bincount(pred_codes, minlength=k).astype(np.float64)
    c = float(np.sum(true_codes == pred_codes))
    s = float(len(refs))
    denominator = (s * s - p @ p) * (s * s - t @ t)
    if denominator == 0:
        return 0.0
    return float((c * s - t @ p) / np.sqrt(denominator))


def f1_binary(predictions, references) -> float:
    """F1 of the positive class 1; 0.0 when there are neither true nor predicted positives."""
    preds, refs = _pair(predictions, references)
    pred_pos, true_pos = preds == 1, refs == 1
    tp = float(np.sum(pred_pos & true_pos))
    denominator = float(np.sum(pred_pos) + np.sum(true_pos))  # = 2tp + fp + fn
    return 0.0 if denominator == 0 else 2.0 * tp / denominator


def _scores(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays for correlation metrics, rejecting non-finite or constant inputs."""
    preds, refs = _pair(predictions, references)
    try:
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError("Correlation metrics need numeric predictions and references.") from None
    if not (np.all(np.isfinite(preds)) and np.all(np.isfinite(refs))):
        raise DataError("Predictions or references contain NaN or infinite values.")
    for what, values in (("references", refs), ("predictions", preds)):
        if np.all(values == values[0]):
            raise DataError(
                f"Correlation is undefined: all {len(values)} {what} are equal "
                f"({values[0]:g})."
            )
    return preds, refs


def pearson(predictions, references) -> float:
    """Pearson correlation between predictions and references."""
    preds, refs = _scores(predictions, references)
    return float(stats.pearsonr(preds, refs)[0])


def spearman(predictions, references) -> float:
    """Spearman rank correlation between predictions and references."""
    preds, refs = _scores(predictions, references)
    return float(stats.spearmanr(preds, refs)[0])


def _require_two_classes(metric: str, references: np.ndarray) -> None:
    classes = np.unique(references)
    if len(classes) < 2:
        raise DataError(
            f"{metric} is undefined here: all {len(references)} references are of one class "
            f"({classes[0].item()!r}); evaluate on a set with at least two classes."
        )


def compute_metrics(metric: str, predictions, references) -> dict[str, float]:
    """All numbers of `metric` for the given predictions; `MAIN_METRIC[metric]` is headline.

    'mcc' -> {mcc}; 'accuracy' -> {accuracy}; 'accuracy_f1' -> {accuracy, f1, accuracy_f1};
    'pearson_spearman' -> {pearson, spearman, pearson_spearman}; 'recall@1' -> {recall@1}
    (masked positions whose top-1 prediction is the original token). Combined keys are the
    mean of their parts. Degenerate evaluation sets raise DataError.
    """
    if metric not in MAIN_METRIC:
        raise TaskError(unknown("metric", metric, MAIN_METRIC))
    preds, refs = _pair(predictions, references)
    if metric == "mcc":
        _require_two_classes("MCC", refs)
        return {"mcc": matthews_corrcoef(preds, refs)}
    if metric == "accuracy":
        return {"accuracy": accuracy(preds, refs)}
    if metric == "recall@1":
        return {"recall@1": accuracy(preds, refs)}
    if metric == "accuracy_f1":
        _require_two_classes("F1", refs)
        if not np.any(refs == 1):
            raise DataError("F1 needs the positive class 1 among the references.")
        acc, f1 = accuracy(preds, refs), f1_binary(preds, refs)
        return {"accuracy": acc, "f1": f1, "accuracy_f1": (acc + f1) / 2.0}
    r, rho = pearson(preds, refs), spearman(preds, refs)
    return {"pearson": r, "spearman": rho, "pearson_spearman": (r + rho) / 2.0}
