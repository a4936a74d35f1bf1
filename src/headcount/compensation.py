"""Compensation: how the importance of the heads that remain changes when a pruned model is
fine-tuned again (Budhraja et al. 2020 find it spread roughly evenly over them).

Given the raw importance of the pruned model's remaining heads before and after fine-tuning
it (same estimator, same examples), the change of head h is Δ_h = I_after[h] − I_before[h].
How evenly the total increase is carried is summarised over the remaining heads by

- the share of the total increase Σ_h max(Δ_h, 0) carried by the top 10% of heads (the
  ceil(10% · n) heads with the largest increase); an even spread gives about 0.1;
- the Gini coefficient of the increases max(Δ_h, 0):
  G = Σ_i Σ_j |x_i − x_j| / (2 n² x̄), 0 when every head gains the same, (n − 1)/n when one
  head carries all of it.

Raw (not per-layer normalised) importance is compared: normalising each layer would hide
whether whole layers took over the pruned heads' work.
"""

from __future__ import annotations

import math

import torch

TOP_SHARE = 0.1


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative `values` (NaN when they sum to 0 or are empty).

    Uses the sorted form G = 2 Σ_i i·x_(i) / (n Σ x) − (n + 1) / n with i = 1..n, which equals
    the mean absolute difference over all pairs divided by twice the mean.

    Example:
        >>> gini(torch.tensor([0.0, 0.0, 0.0, 1.0]))
        0.75
    """
    x = values.detach().flatten().to(torch.float64)
    if (x < 0).any():
        raise ValueError("gini: values must be non-negative")
    total = float(x.sum())
    n = x.numel()
    if n == 0 or total == 0:
        return math.nan
    ordered = torch.sort(x).values
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (ranks * ordered).sum() / (n * total) - (n + 1) / n)


def top_share(values: torch.Tensor, fraction: float = TOP_SHARE) -> float:
    """Share of the sum of non-negative `values` carried by the largest ceil(fraction · n)
    of them (NaN when they sum to 0)."""
    x = values.detach().flatten().to(torch.float64)
    total = float(x.sum())
    if x.numel() == 0 or total == 0:
        return math.nan
    count = max(1, math.ceil(fraction * x.numel() - 1e-9))
    return float(torch.topk(x, count).values.sum() / total)


def compensation_record(before: torch.Tensor, after: torch.Tensor,
                        kept: list[list[int]] | tuple) -> dict:
    """The change of every remaining head's importance, per layer, and how evenly the
    increase is spread.

    `before`/`after` are raw importance `[layers, heads]` of the same pruned model before and
    after fine-tuning it; `kept` lists, per layer, the heads it still has (others are
    ignored: a removed head has no importance to change).

    Example:
        >>> record = compensation_record(before, after, head_layout(model).kept)
        >>> record["top10_share"], record["gini"]
    """
    if before.shape != after.shape:
        raise ValueError(f"importance shapes differ: {list(before.shape)} vs "
                         f"{list(after.shape)}")
    if len(kept) != before.shape[0]:
        raise ValueError(f"{len(kept)} layers of kept heads for scores of shape "
                         f"{list(before.shape)}")
    before = before.detach().to(torch.float64)
    after = after.detach().to(torch.float64)
    heads, layers, changes = [], [], []
    for layer, present in enumerate(kept):
        layer_changes = []
        for head in present:
            change = float(after[layer, head] - before[layer, head])
            heads.append({"layer": layer, "head": head, "before": float(before[layer, head]),
                          "after": float(after[layer, head]), "change": change})
            layer_changes.append(change)
        changes += layer_changes
        present_before = [float(before[layer, h]) for h in present]
        present_after = [float(after[layer, h]) for h in present]
        layers.append({
            "layer": layer, "heads": len(present),
            "before_sum": sum(present_before), "after_sum": sum(present_after),
            "change_sum": sum(layer_changes),
            "change_mean": sum(layer_changes) / len(present) if present else None,
        })
    delta = torch.tensor(changes, dtype=torch.float64)
    increase = delta.clamp(min=0)
    return {
        "heads_remaining": len(changes),
        "total_before": float(sum(h["before"] for h in heads)),
        "total_after": float(sum(h["after"] for h in heads)),
        "total_increase": float(increase.sum()),
        "total_decrease": float((-delta).clamp(min=0).sum()),
        "heads_increased": int((delta > 0).sum()),
        "top10_share": top_share(increase),
        "gini": gini(increase),
        "per_head": heads,
        "per_layer": layers,
    }


def compensation_job(before_path: str, after_path: str, model: str) -> dict:
    """Compensation from two `scores.json` of the same pruned checkpoint `model`, estimated
    before and after fine-tuning it (raw scores are compared; the heads it still has are
    read from its config)."""
    from headcount.arch import KEPT_HEADS_KEY
    from headcount.errors import HeadcountError
    from headcount.io import read_scores_record, versions
    from headcount.models import load_config

    records = [read_scores_record(path, required=("raw_scores",))
               for path in (before_path, after_path)]
    before, after = (torch.tensor(record["raw_scores"], dtype=torch.float64)
                     for record in records)
    if before.shape != after.shape:
        raise HeadcountError(f"{before_path} and {after_path} have scores of shapes "
                             f"{list(before.shape)} and {list(after.shape)}")
    estimators = {record.get("estimator", "gradient") for record in records}
    if len(estimators) > 1:
        raise HeadcountError(f"{before_path} and {after_path} come from different estimators "
                             f"({', '.join(sorted(estimators))}); compare like with like")
    config = load_config(model)
    kept = getattr(config, KEPT_HEADS_KEY, None)
    if kept is None:
        kept = [list(range(before.shape[1]))] * before.shape[0]
    if len(kept) != before.shape[0]:
        raise HeadcountError(f"{model} has {len(kept)} layers of heads; the scores have "
                             f"{before.shape[0]}")
    return {"model": model, "before": before_path, "after": after_path,
            "estimator": estimators.pop(), **compensation_record(before, after, kept),
            "versions": versions()}
