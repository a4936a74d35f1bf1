"""Head-pruning orders other than importance: random and by layer location.

Budhraja et al. (2020, "On the weak link between importance and prunability of attention
heads") prune heads at random and by where their layer sits, and compare with pruning in
importance order. Their abstract only names the strategies; the definitions below are ours.

An order is a permutation of all heads `(layer, head)` of the original model, the first
element pruned first. Layer 0 is the lowest layer (next to the embeddings); L is the number
of distinct layers.

- `importance`: least important first (`headcount.pruning`); not built here.
- `random`: a uniformly random permutation of all heads (`torch.randperm` from
  `torch.Generator().manual_seed(seed)`).
- Layer orders prune whole layers in turn, following `layer_sequence`; within a layer the
  heads go in a seeded random order (one permutation per layer, drawn in layer-index order,
  so that two layer orders with the same seed remove a layer's heads in the same order):
  - `top`: L-1, L-2, ..., 0;
  - `bottom`: 0, 1, ..., L-1;
  - `middle`: by distance |l - (L-1)/2| ascending, ties lower layer first
    (L=6: 2, 3, 1, 4, 0, 5);
  - `avoid-middle`: by that distance descending, ties lower layer first
    (L=6: 0, 5, 1, 4, 2, 3);
  - `consecutive`: one block of adjacent layers that grows: a seeded start s in [0, L-1],
    then s, s+1, ..., L-1, then s-1, s-2, ..., 0 (the pruned layers always form one
    contiguous block);
  - `non-adjacent`: every other layer first, from a seeded parity p in {0, 1}:
    p, p+2, p+4, ..., then the remaining layers ascending: no two pruned layers are adjacent
    while at most ceil((L-p)/2) layers are gone (ceil(L/2), except floor(L/2) for odd L
    and p=1; with L=1 and p=1 the first part is empty).
  The seed changes only the within-layer head order, s and p.

ALBERT shares one layer's weights across all its applications: there is a single row of
heads and no layer location, so only `importance` and `random` apply to it.

`order_scores` turns an order into pseudo-scores (each head's position in the order) so that
`pruning.pruning_curve(scores=..., normalize_method="none")` prunes in exactly that order,
with `keep_one_per_layer` and resuming as for importance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from torch import nn

from headcount.choices import LAYER_ORDERS, ORDERS, check_choice
from headcount.errors import ConfigError
from headcount.layouts import head_layout, unit_layout
from headcount.removal import Head

# Columns of curve rows that differ between draws of one order; every other column (with
# ratio_requested and metric) identifies a point that `summarize_draws` averages over draws.
DRAW_COLUMNS = ("draw", "value", "relative", "ratio_pruned", "heads_remaining",
                "pruned_heads")


def check_order(name: str) -> str:
    """`name` if it is a known order, else ConfigError listing them."""
    return check_choice("order", name, ORDERS)


def _check_size(num_layers: int, num_heads: int = 1) -> None:
    if num_layers < 1 or num_heads < 1:
        raise ConfigError(f"an order needs at least one layer and one head, not "
                          f"{num_layers} layers x {num_heads} heads")


def _seeded_index(seed: int, bound: int) -> int:
    """A seeded integer in [0, bound): the start of `consecutive`, the parity of
    `non-adjacent`."""
    generator = torch.Generator().manual_seed(seed)
    return int(torch.randint(bound, (1,), generator=generator))


def layer_sequence(name: str, num_layers: int, seed: int = 0) -> list[int]:
    """The order in which a layer order prunes whole layers (a permutation of range(L)).

    Example:
        >>> layer_sequence("middle", 6)
        [2, 3, 1, 4, 0, 5]
    """
    if name not in LAYER_ORDERS:
        raise ConfigError(f"'{name}' is not a layer order. Layer orders: "
                          f"{', '.join(LAYER_ORDERS)}")
    _check_size(num_layers)
    layers = list(range(num_layers))
    centre = (num_layers - 1) / 2
    if name == "top":
        return layers[::-1]
    if name == "bottom":
        return layers
    if name == "middle":
        return sorted(layers, key=lambda layer: (abs(layer - centre), layer))
    if name == "avoid-middle":
        return sorted(layers, key=lambda layer: (-abs(layer - centre), layer))
    if name == "consecutive":
        start = _seeded_index(seed, num_layers)
        return list(range(start, num_layers)) + list(range(start - 1, -1, -1))
    parity = _seeded_index(seed, 2)  # non-adjacent
    first = list(range(parity, num_layers, 2))
    return first + [layer for layer in layers if layer not in first]


def head_order(name: str, num_layers: int, num_heads: int, seed: int = 0) -> list[Head]:
    """All `num_layers` x `num_heads` heads in the order `name` prunes them (see the module
    docstring); not for "importance", which depends on the model and data.

    Example:
        >>> head_order("top", 2, 2, seed=0)[:2]  # the two heads of layer 1 first
        [(1, 1), (1, 0)]
    """
    check_order(name)
    if name == "importance":
        raise ConfigError("the importance order comes from scores: use pruning_curve with "
                          "scores or a rank task")
    _check_size(num_layers, num_heads)
    generator = torch.Generator().manual_seed(seed)
    if name == "random":
        return [divmod(int(i), num_heads)
                for i in torch.randperm(num_layers * num_heads, generator=generator)]
    within = [torch.randperm(num_heads, generator=generator).tolist()
              for _ in range(num_layers)]
    return [(layer, head) for layer in layer_sequence(name, num_layers, seed)
            for head in within[layer]]


def _check_location(model: nn.Module, name: str) -> None:
    check_order(name)
    if head_layout(model).shared_layers and name in LAYER_ORDERS:
        raise ConfigError(
            f"--order {name}: ALBERT shares one layer across all its layers, so it has no "
            "layer location; only the importance and random orders apply"
        )


def model_head_order(model: nn.Module, name: str, seed: int = 0) -> list[Head]:
    """`head_order` for `model`'s heads: one row for ALBERT, where only "random" applies.
    Heads a pruned checkpoint lacks are still in the order (callers skip them).

    Example:
        >>> order = model_head_order(model, "random", seed=3)
    """
    _check_location(model, name)
    layout = head_layout(model)
    return head_order(name, layout.num_distinct_layers, layout.num_heads, seed)


def model_order_scores(model: nn.Module, name: str, seed: int = 0,
                       kinds: tuple[str, ...] = ("heads",)) -> dict[str, torch.Tensor]:
    """Pseudo-scores of `name`'s order for each kind of unit ("heads", "neurons"): the
    feed-forward neurons of a layer take the same kinds of order as heads (a seeded random
    permutation of all of them, or layer by layer with a seeded order inside each layer).

    Example:
        >>> model_order_scores(model, "top", seed=1, kinds=("heads", "neurons"))["neurons"]
    """
    _check_location(model, name)
    scores = {}
    for kind in kinds:
        layout = unit_layout(model, kind)
        order = head_order(name, layout.num_distinct_layers, layout.num_units, seed)
        scores[kind] = order_scores(order, layout.num_distinct_layers, layout.num_units)
    return scores


def order_scores(order: Sequence[Head], num_layers: int, num_heads: int) -> torch.Tensor:
    """Pseudo-scores `[num_layers, num_heads]`: each head's position in `order`, so that
    ascending scores (with normalisation "none") give back `order`.

    Example:
        >>> order_scores([(1, 0), (0, 1), (1, 1), (0, 0)], 2, 2)
        tensor([[3., 1.],
                [0., 2.]])
    """
    expected = {(layer, head) for layer in range(num_layers) for head in range(num_heads)}
    heads = [(int(layer), int(head)) for layer, head in order]
    if len(heads) != len(expected) or set(heads) != expected:
        raise ConfigError(f"an order must hold each of the {num_layers} x {num_heads} heads "
                          f"once; got {len(heads)} entries, {len(set(heads) & expected)} "
                          "distinct valid heads")
    scores = torch.empty(num_layers, num_heads)  # positions < 2**24: exact in float32
    for position, (layer, head) in enumerate(heads):
        scores[layer, head] = position
    return scores


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarize_draws(rows: Sequence[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof=1) over draws of `value` and `relative`.

    Rows (from `curve_rows` or read from a curve CSV) that agree on every column except
    those in `DRAW_COLUMNS` are one point; the result has those columns, `n` (the number of
    draws), `value_mean`, `value_std`, `relative_mean`, `relative_std` and `ratio_pruned`
    (the mean over draws, which differ only when keeping one head per layer), in order of
    first appearance. With one draw the standard deviations are NaN.

    Example:
        >>> for point in summarize_draws(rows):
        ...     print(point["ratio_requested"], point["relative_mean"], point["relative_std"])
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple((column, str(value)) for column, value in row.items()
                    if column not in DRAW_COLUMNS)
        groups.setdefault(key, []).append(row)
    summary = []
    for members in groups.values():
        point = {column: value for column, value in members[0].items()
                 if column not in DRAW_COLUMNS}
        point["n"] = len(members)
        for column in ("value", "relative"):
            values = [_number(row[column]) for row in members]
            point[f"{column}_mean"] = statistics.fmean(values)
            point[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        point["ratio_pruned"] = statistics.fmean(_number(row["ratio_pruned"])
                                                 for row in members)
        summary.append(point)
    return summary
