"""More head-importance estimators beside Michel et al.'s gradient, all on the same scale
convention: **higher score = more important** (pruning removes the lowest first).

- `gradient`: `importance.head_importance`, mean over examples of |∂L(x)/∂ξ[l,h]|.
- `ablation` (ground truth): the mean loss increase when that one head is switched off
  (`headcount.ablation`, which says how it is batched and replayed).
- `entropy` and `confidence`: how focused a head's attention is, and its mean maximum
  attention weight (`headcount.attention`).
- `magnitude`: data-free: the Frobenius norm of the head's own weights, its rows of the
  query, key and value weights and its input columns of the output projection (biases
  excluded): sqrt of the sum of squares of the four slices. It reads no data:
  `num_examples` is 0 and `mean_loss` NaN; `batches` may be None.

Heads a physically pruned model no longer has score 0 under every estimator (as with the
gradient). Under torch.distributed each process passes its own share of the examples and
the per-process sums are added up, as `head_importance` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from headcount.ablation import ablation_importance
from headcount.arch import attention_blocks
from headcount.attention import attention_statistics
from headcount.backoff import BatchBackoff
from headcount.choices import ESTIMATORS, check_choice
from headcount.errors import ConfigError
from headcount.importance import Importance, head_importance
from headcount.layouts import head_layout


def check_estimator(estimator: str) -> None:
    check_choice("estimator", estimator, ESTIMATORS)



# --------------------------------------------------------------------------- entry point


def estimate_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]] | None,
    kind: str,
    estimator: str = "gradient",
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> Importance:
    """Head importance of `model` on `batches` of a task of `kind` by `estimator` (one of
    `ESTIMATORS`); higher = more important. See the module docstring for each definition.

    `shared` (default: True for ALBERT) gives one score per shared head; `heads_per_pass`
    is the ablation's K (None: chosen from a memory budget); `backoff` runs batches that
    do not fit in memory in halves (`headcount.backoff`; default: a fresh one).

    Example:
        >>> imp = estimate_importance(model, data.batches(32), data.kind, "ablation")
        >>> imp.raw.shape  # [layers, heads]; the loss increase when each head is removed
        torch.Size([12, 12])
    """
    result, _ = estimate_for_record(model, batches, kind, estimator, shared=shared,
                                    heads_per_pass=heads_per_pass, progress=progress,
                                    total=total, backoff=backoff)
    return result


def estimate_for_record(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]] | None,
    kind: str,
    estimator: str = "gradient",
    *,
    shared: bool | None = None,
    heads_per_pass: int | None = None,
    progress: bool = False,
    total: int | None = None,
    backoff: BatchBackoff | None = None,
) -> tuple[Importance, dict]:
    """`estimate_importance`, plus the fields a `scores.json` record gains:
    `final_batch_size` (the batch size the estimate ended with, smaller than asked after
    running out of memory; None where no batch ran), `entropy_nats` (entropy/confidence:
    mean entropy per head, None for removed heads) or `mean_loss` None (magnitude, which
    reads no data)."""
    check_estimator(estimator)
    if heads_per_pass is not None and heads_per_pass < 1:
        raise ConfigError(f"--heads-per-pass {heads_per_pass} must be at least 1")
    if estimator != "magnitude" and batches is None:
        raise ConfigError(f"the {estimator} estimator needs batches of examples")
    backoff = backoff or BatchBackoff()
    if estimator == "gradient":
        head_layout(model).resolve_shared(shared)
        result, extras = head_importance(model, batches, kind, shared=shared,
                                         progress=progress, total=total, backoff=backoff), {}
    elif estimator == "ablation":
        result, extras = ablation_importance(model, batches, kind, shared=shared,
                                             heads_per_pass=heads_per_pass, progress=progress,
                                             total=total, backoff=backoff), {}
    elif estimator == "magnitude":
        result, extras = magnitude_importance(model, shared=shared), {"mean_loss": None}
    else:
        stats = attention_statistics(model, batches, kind, shared=shared, progress=progress,
                                     total=total, backoff=backoff)
        entropy = [[None if math.isnan(v) else v for v in row]
                   for row in stats.entropy.tolist()]
        result, extras = stats.importance(estimator), {"entropy_nats": entropy}
    return result, {"final_batch_size": backoff.final_size, **extras}


# --------------------------------------------------------------------------- ablation


# --------------------------------------------------------------------------- attention


# --------------------------------------------------------------------------- magnitude


def magnitude_importance(model: nn.Module, *, shared: bool | None = None) -> Importance:
    """Frobenius norm of each head's query/key/value rows (and its rows of any other per-head
    projection: DeBERTa's relative-position ones) and output-projection columns (biases
    excluded). Data-free: `num_examples` 0, `mean_loss` NaN. ALBERT with
    shared=False repeats its one row of weights for each application.

    Example:
        >>> magnitude_importance(model).raw.shape
        torch.Size([12, 12])
    """
    layout = head_layout(model)
    shared = layout.resolve_shared(shared)
    blocks = attention_blocks(model)
    distinct = torch.zeros(layout.num_distinct_layers, layout.num_heads, dtype=torch.float64)
    d = layout.head_dim
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            kept = list(layout.kept[layer])
            if not kept:
                continue
            distinct[layer, kept] = block.head_weight_squares(len(kept), d).sqrt()
    raw = distinct if shared or not layout.shared_layers else distinct.expand(
        layout.num_layers, -1).clone()
    return Importance(raw.float(), 0, float("nan"), shared)
