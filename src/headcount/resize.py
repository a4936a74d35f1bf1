"""Resizing an encoder's attention and feed-forward projections to fewer heads and neurons.

This module is the one implementation of physical removal, and it imports nothing but torch:
headcount's own removal calls it, and every pruned checkpoint carries a verbatim copy of it
in its generated modeling file, so that stock transformers loads the checkpoint without
headcount (`from_pretrained(DIR, trust_remote_code=True)`).

Where a family keeps its modules is described by `paths`, a plain dict (it is written into
the generated file as a literal):

- `layers`: from the base model to the list of distinct layers (`encoder.layer`);
- `attention`: from a layer to the module that owns the per-head projections
  (`attention.self`); `head_rows`: the names of those projections, whose output rows are
  per head (query, key, value, ...; names a model lacks are skipped);
- `attention_output`: from a layer to the output projection (its input columns are per head);
- `intermediate` and `ffn_output`: from a layer to the two feed-forward projections.

The config records what is kept, by original index: `headcount_kept_heads` and
`headcount_kept_neurons`, one list per distinct layer.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

KEPT_HEADS_KEY = "headcount_kept_heads"
KEPT_NEURONS_KEY = "headcount_kept_neurons"


def module_at(root: nn.Module, path: str):
    """The module at a dotted `path` below `root` ("" is `root`; digits index a list)."""
    for part in filter(None, path.split(".")):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = module_at(root, parent_path)
    if name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


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


class NoHeads(nn.Module):
    """Stands in for an attention module whose every head was removed.

    It keeps the (now empty) projections, so that parameter names and the state dict stay
    as they were, and returns an empty context `[batch, seq, 0]`, passed through the output
    projection when this module owns it (DistilBERT): the result is the projection's bias.
    """

    def __init__(self, projections: dict[str, nn.Module], output: str | None):
        super().__init__()
        for name, module in projections.items():
            self.add_module(name, module)
        self.output_name = output

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [batch, seq, 0]
        if self.output_name is not None:
            context = getattr(self, self.output_name)(context)
        return context, None


def layer_modules(base_model: nn.Module, paths: dict) -> list[nn.Module]:
    """The distinct layers of the encoder (one for ALBERT's shared layer)."""
    return list(module_at(base_model, paths["layers"]))


def _rows_of(positions: list[int], width: int, device) -> torch.Tensor:
    """Indices of the weight rows (or columns) of the units at `positions`, `width` each."""
    index = [p * width + i for p in positions for i in range(width)]
    return torch.tensor(index, dtype=torch.long, device=device)


def shrink_heads(layer: nn.Module, paths: dict, positions: list[int], head_dim: int) -> None:
    """Keep only the heads at `positions` (of those the layer has now) in `layer`."""
    attention = module_at(layer, paths["attention"])
    output_path = paths["attention_output"]
    output = module_at(layer, output_path)
    index = _rows_of(positions, head_dim, output.weight.device)
    rows = [name for name in paths["head_rows"] if isinstance(getattr(attention, name, None),
                                                               nn.Linear)]
    for name in rows:
        setattr(attention, name, slice_linear(getattr(attention, name), index, 0))
    set_module(layer, output_path, slice_linear(output, index, 1))
    # Keep the modules' own head counts truthful (forward reshapes with -1 and head size).
    for attribute in ("num_attention_heads", "n_heads"):
        if hasattr(attention, attribute):
            setattr(attention, attribute, len(positions))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(positions) * head_dim
    if not positions:
        owned = output_path.startswith(paths["attention"] + ".")
        output_name = output_path[len(paths["attention"]) + 1:] if owned else None
        projections = {name: getattr(attention, name) for name in rows}
        if owned:
            projections[output_name] = module_at(layer, output_path)
        set_module(layer, paths["attention"], NoHeads(projections, output_name))


def shrink_neurons(layer: nn.Module, paths: dict, positions: list[int]) -> None:
    """Keep only the feed-forward neurons at `positions` (of those the layer has now)."""
    intermediate = module_at(layer, paths["intermediate"])
    index = torch.tensor(positions, dtype=torch.long, device=intermediate.weight.device)
    set_module(layer, paths["intermediate"], slice_linear(intermediate, index, 0))
    output = module_at(layer, paths["ffn_output"])
    set_module(layer, paths["ffn_output"], slice_linear(output, index, 1))


def resize_to_layout(model: nn.Module, paths: dict) -> nn.Module:
    """Shrink a full-size model (as built from its config) to the heads and neurons its
    config records as kept; in place."""
    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.dim
    num_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    kept_heads = getattr(config, KEPT_HEADS_KEY, None)
    kept_neurons = getattr(config, KEPT_NEURONS_KEY, None)
    for index, layer in enumerate(layer_modules(model.base_model, paths)):
        if kept_heads is not None and len(kept_heads[index]) < num_heads:
            shrink_heads(layer, paths, list(kept_heads[index]), hidden // num_heads)
        if kept_neurons is not None:
            size = module_at(layer, paths["intermediate"]).out_features
            if len(kept_neurons[index]) < size:
                shrink_neurons(layer, paths, list(kept_neurons[index]))
    return model
