"""Remove attention heads for real: slice their weights out of the model.

For each pruned head, its rows of the query/key/value projections and the matching input
columns of the output projection go. The model keeps computing exactly what the masked
model computes (a gated-off head contributes nothing; with its weights gone, nothing is
computed for it), with fewer parameters and FLOPs. Per-layer head counts then differ, so the
heads still present are recorded in the config (`headcount_kept_heads`), which is what
`head_layout`, the gates and `load_pruned` read.

A layer whose heads are all removed keeps only its output projection's bias: its attention
module is replaced by `NoHeads`, which returns an empty context.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from headcount.arch import AttentionBlock, attention_blocks
from headcount.errors import ConfigError
from headcount.layouts import KEPT_HEADS_KEY, head_layout

Head = tuple[int, int]  # (layer, head); layer 0 for ALBERT's shared heads


class NoHeads(nn.Module):
    """Stands in for an attention module whose every head was removed.

    It keeps the (now empty) projections, so that parameter names and the state dict stay
    as they were, and returns an empty context `[batch, seq, 0]`, passed through the output
    projection when this module owns it (DistilBERT): the result is the projection's bias.
    """

    def __init__(self, projections: dict[str, nn.Linear], output: str | None):
        super().__init__()
        for name, module in projections.items():
            self.add_module(name, module)
        self.output_name = output

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [batch, seq, 0]
        if self.output_name is not None:
            context = getattr(self, self.output_name)(context)
        return context, None


def _rows_of(positions: list[int], head_dim: int, device) -> torch.Tensor:
    """Indices of the weight rows (or columns) of the heads at `positions`."""
    index = [p * head_dim + i for p in positions for i in range(head_dim)]
    return torch.tensor(index, dtype=torch.long, device=device)


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (`dim=0`) or input columns (`dim=1`) `index`, with
    the original's dtype, device and requires_grad (transformers' prune_linear_layer makes
    float32 layers whatever the model's dtype)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = None
    if linear.bias is not None:
        bias = linear.bias.detach()
        bias = (bias.index_select(0, index) if dim == 0 else bias).clone()
    with warnings.catch_warnings():
        # Built on the meta device (nothing real is initialised only to be overwritten);
        # torch still warns about "initialising" the zero-element weights of an empty layer.
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    return new


def _shrink(block: AttentionBlock, positions: list[int], head_dim: int) -> None:
    index = _rows_of(positions, head_dim, block.query.weight.device)
    q, k, v, out = block.names
    for name in (q, k, v):
        setattr(block.attention, name, slice_linear(getattr(block.attention, name), index, 0))
    setattr(block.output_owner, out, slice_linear(block.output, index, 1))
    # Keep the modules' own head counts truthful (forward reshapes with -1 and head size).
    for attribute in ("num_attention_heads", "n_heads"):
        if hasattr(block.attention, attribute):
            setattr(block.attention, attribute, len(positions))
    if hasattr(block.attention, "all_head_size"):
        block.attention.all_head_size = len(positions) * head_dim
    if not positions:
        parent, attribute = block.slot
        owns_output = block.output_owner is block.attention
        projections = {name: getattr(block.attention, name) for name in (q, k, v)}
        if owns_output:
            projections[out] = block.output
        setattr(parent, attribute, NoHeads(projections, out if owns_output else None))


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
    doomed: dict[int, set[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < layout.num_distinct_layers and 0 <= head < layout.num_heads):
            raise ConfigError(
                f"head ({layer}, {head}) does not exist: the model has "
                f"{layout.num_distinct_layers} layers of {layout.num_heads} heads"
            )
        doomed.setdefault(layer, set()).add(head)
    kept = [list(heads) for heads in layout.kept]
    if layout.shared_layers and not set(kept[0]) - doomed.get(0, set()):
        raise ConfigError(
            "cannot remove every head of ALBERT: its one shared attention layer would be empty"
        )
    blocks = attention_blocks(model)
    for layer, remove in doomed.items():
        positions = [p for p, head in enumerate(kept[layer]) if head not in remove]
        if len(positions) == len(kept[layer]):
            continue
        _shrink(blocks[layer], positions, layout.head_dim)
        kept[layer] = [kept[layer][p] for p in positions]
    setattr(model.config, KEPT_HEADS_KEY, kept)
    return model


def heads_to_keep_mask(model: nn.Module) -> torch.Tensor:
    """The 0/1 mask `[layers, heads]` (one row for ALBERT) of the heads still present."""
    layout = head_layout(model)
    mask = torch.zeros(layout.num_distinct_layers, layout.num_heads)
    for layer, heads in enumerate(layout.kept):
        mask[layer, list(heads)] = 1
    return mask


def attention_parameter_count(model: nn.Module) -> int:
    """Parameters of the attention projections (query, key, value, output)."""
    return sum(
        sum(p.numel() for p in linear.parameters())
        for block in attention_blocks(model)
        for linear in (block.query, block.key, block.value, block.output)
    )
