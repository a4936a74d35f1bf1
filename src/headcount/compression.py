"""A model compressed to a budget from its mask Fisher: search, rearrangement, tuning and
removal in one call; and the baseline that prunes heads alone in importance order.

The pieces are `headcount.mask_search`, `headcount.rearrange`, `headcount.tuning` and
`headcount.removal`; `headcount compress` and the study's comparison of methods both use
`compress_model`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from headcount.cost import encoder_cost, unit_costs
from headcount.fisher import MaskFisher
from headcount.importance import normalize
from headcount.layouts import head_layout, neuron_layout
from headcount.mask_search import Prices, SearchResult, search_masks
from headcount.pruning import least_important_first
from headcount.rearrange import rearrange
from headcount.removal import remove_units
from headcount.tuning import TuningReport, fold_scales, tune_masks


class StepTimer:
    """Wall time of each step, in order (`done(name)` closes the step that just ran)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._started
        self._started = now


@dataclass(frozen=True)
class Compression:
    """A compressed model and how it came about."""

    model: nn.Module
    search: SearchResult
    kept: dict[str, list[tuple[int, int]]]  # after rearrangement
    tuning: TuningReport | None


def present_units(model: nn.Module) -> dict[str, list[list[int]]]:
    """Per kind, the units each layer still has (the search's candidates)."""
    return {"heads": [list(kept) for kept in head_layout(model).kept],
            "neurons": [list(kept) for kept in neuron_layout(model).kept]}


def unit_masks(model: nn.Module, kept: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 gates `[layers, heads]`, `[layers, neurons]` that keep `kept`."""
    heads, neurons = head_layout(model), neuron_layout(model)
    head_mask = torch.zeros(heads.num_layers, heads.num_heads)
    neuron_mask = torch.zeros(neurons.num_layers, neurons.num_neurons)
    for layer, unit in kept["heads"]:
        head_mask[layer, unit] = 1
    for layer, unit in kept["neurons"]:
        neuron_mask[layer, unit] = 1
    return head_mask, neuron_mask


def gated_off(model: nn.Module, head_gates: torch.Tensor,
              neuron_gates: torch.Tensor) -> dict[str, list[tuple[int, int]]]:
    """The present units whose gate is 0: what `remove_units` takes out."""
    heads, neurons = head_layout(model), neuron_layout(model)
    return {
        "heads": [(layer, h) for layer, kept in enumerate(heads.kept) for h in kept
                  if float(head_gates[layer, h]) == 0],
        "neurons": [(layer, j) for layer, kept in enumerate(neurons.kept) for j in kept
                    if float(neuron_gates[layer, j]) == 0],
    }


def compress_model(model: nn.Module, fisher: MaskFisher, prices: Prices, fraction: float,
                   batches=None, *, rearranged: bool = True, first_token_only: bool = False,
                   progress: bool = False, timer: StepTimer | None = None) -> Compression:
    """`model` compressed in place to `fraction` of `prices.full`: the search on the Fisher
    diagonal, each layer's mask rearranged with its Fisher block (`rearranged`), the kept
    units tuned on `batches` and folded into the weights (when `batches` are given), the
    pruned units removed.

    Example:
        >>> done = compress_model(model, mask_fisher(model, batches, "classification"),
        ...                       unit_prices(model, 128, "flops"), 0.6, batches)
    """
    timer = timer or StepTimer()
    present = present_units(model)
    result = search_masks(fisher.diagonal, present, prices, fraction)
    timer.done("search")
    kept = result.kept
    if rearranged:
        kept = {kind: rearrange(fisher.blocks[kind], kept[kind], present[kind])
                for kind in ("heads", "neurons")}
        timer.done("rearrange")
    head_gates, neuron_gates = unit_masks(model, kept)
    tuning = None
    if batches is not None:
        head_gates, neuron_gates, tuning = tune_masks(
            model, batches, head_gates, neuron_gates, first_token_only=first_token_only,
            progress=progress)
        fold_scales(model, head_gates, neuron_gates)
        timer.done("tune")
    remove_units(model, gated_off(model, head_gates, neuron_gates))
    timer.done("remove")
    return Compression(model, result, kept, tuning)


def heads_only_model(model: nn.Module, head_scores: torch.Tensor, fraction: float,
                     seq_length: int) -> nn.Module:
    """The baseline: a copy of `model` with heads removed least important first (l1 per
    layer, as `headcount curve` ranks them) until the encoder FLOPs are within `fraction`
    of the model's, or every head is gone."""
    full = encoder_cost(model, seq_length).macs
    per_head = unit_costs(model, seq_length).head_macs
    layout = head_layout(model)
    count = min(layout.heads_remaining, -(-int(full * (1 - fraction)) // per_head))
    order = least_important_first(normalize(head_scores, "l1"), exclude=set(layout.absent()))
    return remove_units(copy.deepcopy(model), {"heads": order[:count]})
