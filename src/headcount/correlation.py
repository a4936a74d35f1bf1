"""Correlation between head importance and attention drift (section 5, Figure 6).

Each head is one point: its importance (a `scores.json` of `headcount importance`) and its
Jensen–Shannon divergence between the pre-trained and the fine-tuned model (the `js` of a
`drift.json` of `headcount compare`). Reported: Pearson's r and Spearman's ρ with their
two-sided p-values, and the least-squares line of JS on importance
(js ≈ slope · importance + intercept), over the n heads that have both values (heads
removed by pruning have no JS and are left out).

ALBERT shares one set of heads across its L layer applications: its scores have one row,
its drift L rows. A shared head's JS is then the mean of its JS over the L applications,
and the record says so (`js_reduction`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from headcount.errors import HeadcountError

MIN_HEADS = 3


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def correlate(importance, js) -> dict:
    """Pearson r and Spearman ρ (with two-sided p-values) between two equal-length sequences,
    and the least-squares line of `js` on `importance`. Undefined statistics (a constant
    input) are None, with a warning.

    Example:
        >>> correlate([0.1, 0.5, 0.2, 0.9], [0.3, 0.2, 0.4, 0.1])["pearson_r"]
        -0.86...
    """
    from scipy import stats

    x = np.asarray(importance, dtype=np.float64)
    y = np.asarray(js, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise HeadcountError(f"importance and JS must be two lists of the same length, got "
                             f"shapes {x.shape} and {y.shape}")
    n = int(x.size)
    if n < MIN_HEADS:
        raise HeadcountError(f"need at least {MIN_HEADS} heads with both an importance and a "
                             f"JS divergence to correlate, got {n}")
    result = {"n": n, "pearson_r": None, "pearson_p": None, "spearman_rho": None,
              "spearman_p": None, "slope": None, "intercept": None, "slope_stderr": None}
    constant = [name for name, v in (("importance", x), ("JS", y)) if np.ptp(v) == 0]
    if constant:
        warnings.warn(f"{' and '.join(constant)} constant over the {n} heads: correlations "
                      "are undefined", stacklevel=2)
    else:
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
        result.update(
            pearson_r=_finite_or_none(pearson.statistic),
            pearson_p=_finite_or_none(pearson.pvalue),
            spearman_rho=_finite_or_none(spearman.statistic),
            spearman_p=_finite_or_none(spearman.pvalue),
        )
    if "importance" not in constant:
        line = stats.linregress(x, y)
        result.update(slope=float(line.slope), intercept=float(line.intercept),
                      slope_stderr=_finite_or_none(line.stderr))
    return result


def _matrix(rows, what: str, path) -> list[list[float | None]]:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise HeadcountError(f"{path}: '{what}' is not a [layers][heads] table")
    if len({len(row) for row in rows}) != 1:
        raise HeadcountError(f"{path}: the rows of '{what}' have different lengths")
    return [[None if v is None else float(v) for v in row] for row in rows]


def align(scores: dict, drift: dict, *, raw: bool = False, names=("scores", "drift")):
    """Pair each head's importance with its JS divergence.

    Returns (heads as [layer, head], importance, js, js_reduction). Scores with one row of
    shared heads (ALBERT) are paired with each head's JS averaged over the drift's layer
    applications. Heads without a JS value (removed by pruning) or with a non-finite
    importance are left out. A HeadcountError names the two shapes when they do not fit.
    """
    key = "raw_scores" if raw else "scores"
    importance = _matrix(scores[key], key, names[0])
    js = _matrix(drift["js"], "js", names[1])
    shape_s = f"{len(importance)} x {len(importance[0])}"
    shape_d = f"{len(js)} x {len(js[0])}"
    mismatch = (f"cannot correlate {names[0]} ({shape_s} heads) with {names[1]} "
                f"({shape_d} heads)")
    family_s = (scores.get("architecture") or {}).get("family")
    family_d = (drift.get("architecture") or {}).get("family")
    if family_s and family_d and family_s != family_d:
        raise HeadcountError(f"{mismatch}: the scores are of a {family_s} model, the drift of "
                             f"a {family_d} model")
    if len(importance[0]) != len(js[0]):
        raise HeadcountError(f"{mismatch}: different numbers of heads per layer")
    shared = bool(scores.get("shared_across_layers") or drift.get("shared_across_layers"))
    if len(importance) == len(js):
        reduction = "per head: JS of the same (layer, head)"
    elif len(importance) == 1 and shared:
        reduction = (f"shared heads (ALBERT): each head's JS averaged over the {len(js)} layer "
                     "applications")
        columns = []
        for head in range(len(js[0])):
            values = [row[head] for row in js if row[head] is not None]
            columns.append(sum(values) / len(values) if values else None)
        js = [columns]
    else:
        raise HeadcountError(f"{mismatch}: different numbers of layers")
    heads, xs, ys = [], [], []
    for layer, (row_i, row_j) in enumerate(zip(importance, js, strict=True)):
        for head, (value_i, value_j) in enumerate(zip(row_i, row_j, strict=True)):
            if value_j is None or value_i is None or not math.isfinite(value_i) \
                    or not math.isfinite(value_j):
                continue
            heads.append([layer, head])
            xs.append(value_i)
            ys.append(value_j)
    return heads, xs, ys, reduction


def correlation_record(scores: dict, drift: dict, *, raw: bool = False,
                       names=("scores", "drift")) -> dict:
    """One scores file against one drift file: statistics, provenance and the points."""
    heads, xs, ys, reduction = align(scores, drift, raw=raw, names=names)
    normalize = scores.get("normalize")
    return {
        "scores": str(names[0]),
        "scores_task": scores.get("task"),
        "scores_model": scores.get("model"),
        "importance": "raw_scores" if raw else f"scores ({normalize}-normalised)"
        if normalize else "scores",
        "drift_task": drift.get("task"),
        "js_reduction": reduction,
        **correlate(xs, ys),
        "line": "js = slope * importance + intercept (least squares)",
        "points": {"heads": heads, "importance": xs, "js": ys},
    }


