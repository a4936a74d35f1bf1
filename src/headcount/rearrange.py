"""Mask rearrangement (Kwon et al. 2022): inside each layer, which units to prune so that the
loss grows least, keeping the layer's number of kept units.

To second order, pruning a set S of a layer's units (masks to 0) raises the loss by about
½ 1_Sᵀ F 1_S, with F the layer's block of the mask Fisher: the diagonal alone ignores that
units can make up for each other. Greedily, as in the paper: start from the |S| units with
the smallest diagonal; then, for each other unit in order of increasing diagonal, add it to
S and drop from S the unit whose removal leaves the smallest 1_Sᵀ F 1_S. Each step is O(n)
with the running F·1_S, so a layer of n units costs O(n²).
"""

from __future__ import annotations

import torch


def rearrange_layer(block: torch.Tensor, kept: list[int], present: list[int]) -> list[int]:
    """The units to keep instead of `kept` (as many), among `present`, by the layer's Fisher
    block `[units, units]` (indexed by original unit).

    Example:
        >>> rearrange_layer(fisher.blocks["heads"][3], kept=[0, 2, 5], present=range(12))
    """
    present = list(present)
    count_pruned = len(present) - len(kept)
    if count_pruned <= 0 or not kept:
        return list(kept)
    f = block.to(torch.float64)[present][:, present]  # [n, n] over the present units
    order = sorted(range(len(present)), key=lambda i: (float(f[i, i]), i))
    pruned = order[:count_pruned]
    column_sum = f[:, pruned].sum(dim=1)  # F · 1_S
    total = float(column_sum[pruned].sum())  # 1_Sᵀ F 1_S
    for candidate in order[count_pruned:]:
        # add the candidate ...
        total += 2 * float(column_sum[candidate]) + float(f[candidate, candidate])
        column_sum += f[:, candidate]
        pruned.append(candidate)
        # ... and drop the member whose removal leaves the smallest 1_Sᵀ F 1_S
        members = torch.tensor(pruned)
        without = total - 2 * column_sum[members] + torch.diagonal(f)[members]
        drop = int(torch.argmin(without))
        total = float(without[drop])
        column_sum -= f[:, pruned[drop]]
        del pruned[drop]
    removed = {present[i] for i in pruned}
    return [unit for unit in present if unit not in removed]


def rearrange(blocks: torch.Tensor, kept: list[tuple[int, int]],
              present: list[list[int]]) -> list[tuple[int, int]]:
    """`rearrange_layer` for every layer of a kind of unit: `blocks` `[layers, units,
    units]`, `kept` (layer, unit) pairs; every layer keeps as many units as before."""
    by_layer: dict[int, list[int]] = {layer: [] for layer in range(len(present))}
    for layer, unit in kept:
        by_layer[layer].append(unit)
    return [(layer, unit) for layer, units in by_layer.items()
            for unit in rearrange_layer(blocks[layer], units, present[layer])]


def pruning_penalty(block: torch.Tensor, pruned: list[int]) -> float:
    """1_Sᵀ F 1_S of a layer's pruned set S (twice the second-order loss increase)."""
    if not pruned:
        return 0.0
    index = torch.tensor(pruned)
    return float(block.to(torch.float64)[index][:, index].sum())
