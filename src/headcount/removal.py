"""Remove attention heads and feed-forward neurons for real: slice their weights out.

For each pruned head, its rows of the query/key/value projections (and of any other
per-head tensor its family has: DeBERTa's relative-position projections, ModernBERT's fused
Wqkv thirds) and the matching input columns of the output projection go. The model keeps
computing exactly what the masked model computes (a gated-off head contributes nothing; with
its weights gone, nothing is computed for it), with fewer parameters and FLOPs. Per-layer
head counts then differ, so the heads still present are recorded in the config
(`headcount_kept_heads`), which is what `head_layout`, the gates and `load_pruned` read.

A layer whose heads are all removed keeps only its output projection's bias: its attention
module is replaced by `NoHeads`, which returns an empty context. The slicing itself is
`headcount.resize`, which pruned checkpoints also carry for loading without headcount.

A feed-forward neuron j is row j of the intermediate projection (and its bias; rows j and
I + j of ModernBERT's gated one) and column j of the output projection; removing it removes
exactly what gating its activation to 0 switches off. The neurons still present are
recorded as `headcount_kept_neurons`. A layer left with no neurons keeps the output
projection's bias (an empty matrix product is 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from headcount.arch import (
    attention_blocks,
    distinct_layers,
    family_of,
    feed_forwards,
)
from headcount.errors import ConfigError
from headcount.layouts import KEPT_HEADS_KEY, KEPT_NEURONS_KEY, head_layout, neuron_layout
from headcount.resize import shrink_heads, shrink_neurons

Head = tuple[int, int]  # (layer, head); layer 0 for ALBERT's shared heads
Neuron = tuple[int, int]  # (layer, neuron), likewise


def remove_heads(model: nn.Module, heads: Iterable[Head]) -> nn.Module:
    """Physically remove `heads` (original (layer, head) indices) from `model`, in place.

    Heads already removed are ignored. ALBERT's heads are shared by all layer applications:
    give them as (0, head). Removing every head of ALBERT is refused, since nothing of the
    attention would be left to apply L times.

    Example:
        >>> remove_heads(model, [(0, 3), (5, 0), (5, 7)])
        >>> head_layout(model).kept[0]
        (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11)
    """
    layout = head_layout(model)
    doomed = _doomed(layout, heads, "heads")
    kept = [list(heads) for heads in layout.kept]
    if layout.shared_layers and not set(kept[0]) - doomed.get(0, set()):
        raise ConfigError(
            "cannot remove every head of ALBERT: its one shared attention layer would be empty"
        )
    layers, paths = distinct_layers(model), family_of(model.config).paths
    for layer, remove in doomed.items():
        positions = [p for p, head in enumerate(kept[layer]) if head not in remove]
        if len(positions) == len(kept[layer]):
            continue
        shrink_heads(layers[layer], paths, positions, layout.head_dim)
        kept[layer] = [kept[layer][p] for p in positions]
    setattr(model.config, KEPT_HEADS_KEY, kept)
    return model


def _doomed(layout, units: Iterable[tuple[int, int]], what: str) -> dict[int, set[int]]:
    """Layer -> original indices to remove, every index checked."""
    doomed: dict[int, set[int]] = {}
    for layer, unit in units:
        if not (0 <= layer < layout.num_distinct_layers and 0 <= unit < layout.num_units):
            raise ConfigError(
                f"{what[:-1]} ({layer}, {unit}) does not exist: the model has "
                f"{layout.num_distinct_layers} layers of {layout.num_units} {what}"
            )
        doomed.setdefault(layer, set()).add(unit)
    return doomed


def remove_neurons(model: nn.Module, neurons: Iterable[Neuron]) -> nn.Module:
    """Physically remove feed-forward `neurons` (original (layer, index) pairs) from
    `model`, in place; ones already removed are ignored. ALBERT's shared layer is layer 0.

    Example:
        >>> remove_neurons(model, [(0, 5), (0, 17), (3, 0)])
        >>> neuron_layout(model).kept[0][:6]
        (0, 1, 2, 3, 4, 6)
    """
    layout = neuron_layout(model)
    doomed = _doomed(layout, neurons, "neurons")
    kept = [list(units) for units in layout.kept]
    layers, paths = distinct_layers(model), family_of(model.config).paths
    for layer, remove in doomed.items():
        positions = [p for p, neuron in enumerate(kept[layer]) if neuron not in remove]
        if len(positions) == len(kept[layer]):
            continue
        shrink_neurons(layers[layer], paths, positions)
        kept[layer] = [kept[layer][p] for p in positions]
    setattr(model.config, KEPT_NEURONS_KEY, kept)
    return model


def remove_units(model: nn.Module, units: dict[str, Iterable[tuple[int, int]]]) -> nn.Module:
    """`remove_heads` and `remove_neurons` in one call: `units` maps "heads" and/or
    "neurons" to the (layer, index) pairs to remove."""
    if units.get("heads"):
        remove_heads(model, units["heads"])
    if units.get("neurons"):
        remove_neurons(model, units["neurons"])
    return model


def heads_to_keep_mask(model: nn.Module) -> torch.Tensor:
    """The 0/1 mask `[layers, heads]` (one row for ALBERT) of the heads still present."""
    layout = head_layout(model)
    mask = torch.zeros(layout.num_distinct_layers, layout.num_heads)
    for layer, heads in enumerate(layout.kept):
        mask[layer, list(heads)] = 1
    return mask


def feed_forward_parameter_count(model: nn.Module) -> int:
    """Parameters of the feed-forward projections (intermediate, output)."""
    return sum(sum(p.numel() for p in linear.parameters())
               for block in feed_forwards(model) for linear in (block.intermediate, block.output))


def attention_parameter_count(model: nn.Module) -> int:
    """Parameters of the attention projections removed with the heads (query, key, value,
    any other per-head tensor, and the output projection)."""
    return sum(p.numel() for block in attention_blocks(model) for p in block.head_parameters())
