"""Unstructured weight-magnitude pruning of the encoder (Gordon et al. 2020).

What is pruned: the weight matrix of every `nn.Linear` inside the encoder's transformer
layers, i.e. the attention query/key/value/output projections and the two feed-forward
matrices of each layer. Not pruned: the embeddings (and the projections that map them to
the hidden size: ELECTRA's `embeddings_project`, ALBERT's `embedding_hidden_mapping_in`),
the pooler (headcount counts it as part of the classification head, see `models.head_keys`),
the task and masked-LM heads, biases and LayerNorm. Gordon et al. prune the encoder's
weight matrices; keeping the rest dense keeps a pre-trained checkpoint and its fine-tuned
descendants comparable whatever head is put on top.

Sparsity s in [0, 1) removes exactly round(s * N) weights (Python's `round`, half to even):
`scope="global"` ranks |w| over all N prunable weights together, `scope="layer"` ranks
within each matrix (round(s * n_i) of its n_i). Ties at the threshold are broken by position
(matrices in `prunable_weights` order, then row-major index), so the count is exact even
when many weights share a magnitude (e.g. the zeros of an already pruned model).

ALBERT's one shared layer has one set of matrices: they are pruned once, and every layer
application uses the same sparse weights. Physically head-pruned checkpoints have smaller
attention matrices; a layer whose heads are all gone has empty ones, which are skipped.

A pruned model is an ordinary model with zeros. To keep them zero while fine-tuning, pass the
masks to `headcount.finetune.finetune(weight_masks=...)` (see `masks_fixed`). A checkpoint
written by `weight_prune_job` records its pruning in its config
(`config.headcount_weight_pruning`), and `pipeline.finetune_job` then fine-tunes it with
masks read off its zeros.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from headcount.arch import encoder_of, layer_stack
from headcount.choices import DEFAULT_SPARSITIES, SCOPES, check_choice
from headcount.errors import ConfigError, HeadcountError

# Config attribute of a weight-pruned checkpoint: {"sparsity", "scope", "achieved", ...}.
WEIGHT_PRUNING_KEY = "headcount_weight_pruning"
RECORD_FILE = "weight_pruning.json"


def check_sparsity(sparsity) -> float:
    """`sparsity` as a float, or a one-line ConfigError when it is not in [0, 1)."""
    if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
            or not 0 <= sparsity < 1):
        raise ConfigError(f"--sparsity {sparsity} is outside [0, 1): give the share of the "
                          "encoder's weights to zero, e.g. 0.3")
    return float(sparsity)


def check_scope(scope: str) -> str:
    return check_choice("scope", scope, SCOPES)


def _layer_stack(model: nn.Module) -> nn.Module:
    """The module holding the encoder's transformer layers."""
    stack = layer_stack(model)  # refuses unsupported architectures
    if stack is None:  # ALBERT: the shared layer lives in its layer groups
        return encoder_of(model).encoder.albert_layer_groups
    return stack


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The encoder's linear weights, by their parameter name in `model`, in model order.

    Example:
        >>> names = list(prunable_weights(model))
        >>> names[0]
        'bert.encoder.layer.0.attention.self.query.weight'
    """
    stack = _layer_stack(model)
    prefix = next(name for name, module in model.named_modules() if module is stack)
    weights = {}
    for name, module in stack.named_modules(prefix=prefix):
        # A layer whose heads were all removed keeps empty projections: nothing to prune.
        if isinstance(module, nn.Linear) and module.weight.numel() > 0:
            weights[f"{name}.weight"] = module.weight
    return weights


_RADIX = 1 << 16  # two passes of 16 bits select a float32 exactly


def _magnitude_bits(weight: torch.Tensor) -> torch.Tensor:
    """|w| as float32 bit patterns read as int32, flattened [n]. For non-negative floats the
    integers order exactly like the values, so selecting among them selects among |w|."""
    return weight.detach().float().abs().reshape(-1).view(torch.int32)


def _kth_smallest_magnitude(weights: list[torch.Tensor], k: int) -> tuple[float, int]:
    """(the k-th smallest |w| over all of `weights`, 1-based; how many |w| are below it).

    A two-pass radix select on the bit patterns (high 16 bits, then the low 16 bits within
    the chosen bucket): exact, and its temporaries are one matrix at a time, where a
    `kthvalue` over all N magnitudes would need a float32 copy of every weight plus its own
    value and int64 index buffers (~5 GB more for RoBERTa-large's 300M encoder weights).
    """
    device = weights[0].device
    high = torch.zeros(_RADIX, dtype=torch.long, device=device)
    for weight in weights:
        high += torch.bincount(_magnitude_bits(weight) >> 16, minlength=_RADIX)
    cumulative = high.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, k))  # first bucket reaching k values
    below = int(cumulative[bucket - 1]) if bucket else 0
    low = torch.zeros(_RADIX, dtype=torch.long, device=device)
    for weight in weights:
        bits = _magnitude_bits(weight)
        low += torch.bincount(bits[(bits >> 16) == bucket] & (_RADIX - 1), minlength=_RADIX)
    cumulative = low.cumsum(0)
    offset = int(torch.searchsorted(cumulative, k - below))
    below += int(cumulative[offset - 1]) if offset else 0
    value = torch.tensor([(bucket << 16) | offset], dtype=torch.int32).view(torch.float32)
    return float(value), below


def _smallest_masks(weights: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    """Keep-masks (True = keep) that prune exactly the `count` smallest |w| over `weights`,
    ties broken by position (list order, then row-major index)."""
    if count == 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]
    threshold, below = _kth_smallest_magnitude(weights, count)
    ties_to_prune = count - below  # >= 1: the k-th smallest itself sits at the threshold
    masks = []
    for w in weights:
        # float32 holds float16/bfloat16 values exactly: compare there, one matrix at a time.
        magnitude = w.detach().float().abs()
        keep = magnitude >= threshold
        if ties_to_prune > 0:
            tied = (magnitude == threshold).reshape(-1).nonzero().squeeze(1)  # flat positions
            chosen = tied[:ties_to_prune]
            keep.view(-1)[chosen] = False
            ties_to_prune -= chosen.numel()
        masks.append(keep)
    return masks


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global"
                    ) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, True = keep, on each weight's device) of the prunable weights that
    zero exactly round(sparsity * N) weights of smallest magnitude, over all of them
    (`scope="global"`) or round(sparsity * n_i) in each matrix (`scope="layer"`).

    Example:
        >>> masks = magnitude_masks(model, 0.3)
        >>> apply_masks(model, masks)
        >>> sparsity_report(model)["sparsity"]
        0.3
    """
    sparsity = check_sparsity(sparsity)
    check_scope(scope)
    weights = prunable_weights(model)
    if not weights:
        raise HeadcountError("the model has no encoder weights to prune")
    names, tensors = list(weights), list(weights.values())
    if scope == "global":
        masks = _smallest_masks(tensors, round(sparsity * sum(t.numel() for t in tensors)))
    else:
        masks = [_smallest_masks([t], round(sparsity * t.numel()))[0] for t in tensors]
    return dict(zip(names, masks, strict=True))


def _matched(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """name -> (weight, mask on the weight's device), refusing masks for another model."""
    weights = prunable_weights(model)
    unknown = sorted(set(masks) - set(weights))
    if unknown:
        raise HeadcountError(f"masks for weights this model does not prune: "
                             f"{', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}")
    matched = {}
    for name, keep in masks.items():
        weight = weights[name]
        if tuple(keep.shape) != tuple(weight.shape):
            raise HeadcountError(f"mask of {name} has shape {list(keep.shape)}, the weight "
                                 f"{list(weight.shape)}")
        matched[name] = (weight, keep.to(device=weight.device, dtype=torch.bool))
    return matched


@torch.no_grad()
def _zero_pruned(matched: Iterable[tuple]) -> None:
    for weight, keep in matched:
        weight.masked_fill_(~keep, 0)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero, in place, the weights whose mask is False.

    Example:
        >>> apply_masks(model, magnitude_masks(model, 0.5, scope="layer"))
    """
    _zero_pruned(_matched(model, masks).values())


def masks_from_zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks of a pruned model read off its weights: keep = (w != 0).

    Example:
        >>> masks = masks_from_zeros(load_model("pruned/", "checkpoint").model)
    """
    return {name: weight.detach() != 0 for name, weight in prunable_weights(model).items()}


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Zeros among the prunable weights: overall and per matrix.

    Example:
        >>> sparsity_report(model)["matrices"]["bert.encoder.layer.0.attention.self.query.weight"]
        {'zeros': 307, 'size': 1024, 'sparsity': 0.2998046875}
    """
    matrices = {}
    for name, weight in prunable_weights(model).items():
        zeros = int((weight == 0).sum())
        matrices[name] = {"zeros": zeros, "size": weight.numel(),
                          "sparsity": zeros / weight.numel()}
    zeros = sum(entry["zeros"] for entry in matrices.values())
    size = sum(entry["size"] for entry in matrices.values())
    return {"zeros": zeros, "size": size, "sparsity": zeros / size if size else 0.0,
            "matrices": matrices}


def _masked_gradient(keep: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    if keep.device != gradient.device:
        keep = keep.to(gradient.device)
    return gradient.masked_fill(~keep, 0)


@contextmanager
def masks_fixed(model: nn.Module, masks: dict[str, torch.Tensor],
                optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """While inside, pruned weights stay exactly 0 through `optimizer`'s steps.

    The pruned weights are zeroed on entry; their gradients are zeroed as they are computed
    (so Adam's moments stay 0, and with them the update and the decoupled weight decay of a
    zero weight), and the masks are applied again after every optimizer step, which covers
    optimizers that would move a zero-gradient weight. Works with an accelerate-prepared
    model (the parameters are the same objects) and optimizer (the hook sits on the torch
    optimizer it wraps). The hooks are removed on exit, even after an exception.

    Example:
        >>> optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
        >>> with masks_fixed(model, masks, optimizer):
        ...     train(model, optimizer)
    """
    matched = list(_matched(model, masks).values())
    _zero_pruned(matched)
    handles = []
    try:
        for weight, keep in matched:
            if weight.requires_grad:  # frozen weights do not move anyway
                handles.append(weight.register_hook(
                    lambda gradient, keep=keep: _masked_gradient(keep, gradient)))
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
        handles.append(inner.register_step_post_hook(lambda *_: _zero_pruned(matched)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def recorded_pruning(model: nn.Module) -> dict | None:
    """The weight pruning a checkpoint's config records (`weight_prune_job`), or None."""
    return getattr(model.config, WEIGHT_PRUNING_KEY, None)


def check_sparsities(sparsities: Iterable[float] | None) -> list[float]:
    """Sorted distinct levels with 0 added (the reference of `relative`)."""
    levels = DEFAULT_SPARSITIES if sparsities is None else tuple(sparsities)
    return sorted({0.0, *(check_sparsity(s) for s in levels)})


def sparsity_curve(
    model: nn.Module,
    evaluate_model: Callable[[nn.Module], object],
    sparsities: Iterable[float] | None = None,
    scope: str = "global",
    progress: bool = False,
) -> list[dict]:
    """Evaluate `model` pruned to each sparsity level (default 0, 0.1, ..., 0.9), each level
    pruned from the original weights, which are restored afterwards (even after an error).

    `evaluate_model(model)` returns an `Evaluation`. Rows, one per level and metric:
    sparsity_requested, sparsity_achieved (zeros among the prunable weights, so a model that
    already had zeros shows them), metric, value, relative (value / value at sparsity 0),
    mean_loss, main (whether it is the task's headline metric). Level 0 is always evaluated.
    Only the prunable weights are copied (on their device) to restore them.

    Example:
        >>> rows = sparsity_curve(model, lambda m: evaluate(m, batches, "mlm"))
        >>> [(r["sparsity_requested"], r["value"]) for r in rows]
    """
    check_scope(scope)
    levels = check_sparsities(sparsities)
    weights = prunable_weights(model)
    original = {name: weight.detach().clone() for name, weight in weights.items()}
    rows, reference = [], None
    try:
        for level in tqdm(levels, desc="sparsity", unit="level", disable=not progress):
            apply_masks(model, magnitude_masks(model, level, scope))
            achieved = sparsity_report(model)["sparsity"]
            evaluation = evaluate_model(model)
            reference = reference or evaluation.metrics
            for metric, value in evaluation.metrics.items():
                base = reference[metric]
                rows.append({
                    "sparsity_requested": level, "sparsity_achieved": achieved,
                    "metric": metric, "value": value,
                    "relative": value / base if base != 0 else math.nan,
                    "mean_loss": evaluation.mean_loss, "main": metric == evaluation.main,
                })
            _restore(weights, original)
    finally:
        _restore(weights, original)
    return rows


@torch.no_grad()
def _restore(weights: dict[str, nn.Parameter], original: dict[str, torch.Tensor]) -> None:
    for name, weight in weights.items():
        weight.copy_(original[name])


