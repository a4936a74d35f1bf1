"""Compensation: how the importance of the heads that remain changes when a pruned model is
fine-tuned again (Budhraja et al. 2020 find it spread roughly evenly over them).

Given the raw importance of the pruned model's n remaining heads before and after
fine-tuning it (same estimator, same examples), each head's **share** of the total is
s_h = I[h] / Σ_k I[k]. The summaries use the change of share Δ_h = s_after[h] − s_before[h]
(the changes sum to 0): raw gradient importance scales with the loss, which fine-tuning
lowers for every head alike, so raw differences would mostly measure that. How evenly the
gain is carried is summarised by

- `top10_share`: the share of the total gain Σ_h max(Δ_h, 0) carried by the top 10% of
  heads (the ceil(10% · n) heads with the largest gain); an even spread over all heads
  gives about 0.1 (over the heads that gain at all: 0.1 · n / heads gaining);
- `gini`: the Gini coefficient of the gains max(Δ_h, 0) over all remaining heads,
  G = Σ_i Σ_j |x_i − x_j| / (2 n² x̄): 0 when every head gains the same, (n − 1)/n when one
  head carries all of it (a head that loses share counts as gaining 0).

The raw values, their changes and the totals are recorded too, per head and per layer.
Shares are of the whole model, not per layer: normalising each layer would hide whether
whole layers took over the pruned heads' work.
"""

from __future__ import annotations

import math

import torch

TOP_SHARE = 0.1
SHARE_TOLERANCE = 1e-12


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
    """Every remaining head's importance and share of the total before and after
    fine-tuning, per layer, and how evenly the gain of share is spread.

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
    present = [(layer, head) for layer, heads in enumerate(kept) for head in heads]
    raw_before = torch.tensor([float(before[h]) for h in present], dtype=torch.float64)
    raw_after = torch.tensor([float(after[h]) for h in present], dtype=torch.float64)

    def shares(values: torch.Tensor) -> torch.Tensor:
        total = values.sum()
        return values / total if total != 0 else torch.full_like(values, math.nan)

    share_before, share_after = shares(raw_before), shares(raw_after)
    delta = share_after - share_before
    heads = [{"layer": layer, "head": head, "before": float(raw_before[i]),
              "after": float(raw_after[i]), "change": float(raw_after[i] - raw_before[i]),
              "share_before": float(share_before[i]), "share_after": float(share_after[i]),
              "share_change": float(delta[i])}
             for i, (layer, head) in enumerate(present)]
    layers = []
    for layer, kept_heads in enumerate(kept):
        rows = [h for h in heads if h["layer"] == layer]
        layers.append({
            "layer": layer, "heads": len(kept_heads),
            "before_sum": sum(h["before"] for h in rows),
            "after_sum": sum(h["after"] for h in rows),
            "share_before": sum(h["share_before"] for h in rows),
            "share_after": sum(h["share_after"] for h in rows),
            "share_change": sum(h["share_change"] for h in rows),
            "share_change_mean": (sum(h["share_change"] for h in rows) / len(rows)
                                  if rows else None),
        })
    # Shares are float64 sums of float32 scores: changes below 1e-12 are rounding, not gain.
    gain = (torch.where(delta > SHARE_TOLERANCE, delta, 0) if not delta.isnan().any()
            else torch.zeros(0))
    return {
        "heads_remaining": len(present),
        "total_before": float(raw_before.sum()),
        "total_after": float(raw_after.sum()),
        "total_share_gain": float(gain.sum()) if gain.numel() else math.nan,
        "heads_gaining": int((delta > SHARE_TOLERANCE).sum()),
        "top10_share": top_share(gain),
        "gini": gini(gain),
        "per_head": heads,
        "per_layer": layers,
    }


