"""Resizing an encoder's attention and feed-forward projections to fewer heads and neurons.

This module is the one implementation of physical removal, and it imports nothing but torch
(and the standard library): headcount's own removal calls it, and every pruned checkpoint
carries a verbatim copy of it in its generated modeling file, so that stock transformers
loads the checkpoint without headcount (`from_pretrained(DIR, trust_remote_code=True)`).

Where a family keeps its modules is described by `paths`, a plain dict (it is written into
the generated file as a literal):

- `layers`: from the base model to the list of distinct layers (`encoder.layer`);
- `attention`: from a layer to the module that owns the per-head projections
  (`attention.self`); `head_rows`: the names of its projections whose output rows are per
  head, `d_head` each (query, key, value, DeBERTa's relative-position `pos_key_proj` ...;
  names a model lacks are skipped);
- `attention_output`: from a layer to the output projection (its input columns are per head);
- `intermediate` and `ffn_output`: from a layer to the two feed-forward projections.

Optional keys, for families whose per-head tensors are laid out otherwise:

- `fused_qkv`: a projection whose rows are [q | k | v], each third per head (ModernBERT's
  `Wqkv`): head h keeps its rows in every third;
- `interleaved_qkv`: a projection whose rows are per head [q_h; k_h; v_h], `3 * d_head` per
  head (DeBERTa's `in_proj`);
- `head_vectors`: 1-D parameters of the attention module, `d_head` entries per head
  (DeBERTa's `q_bias`, `v_bias`);
- `head_bias_argument`: an argument of the attention module's forward holding a bias
  `[batch, heads, queries, keys]` computed for every original head (MPNet's
  `position_bias`, from one relative-position table shared by all layers, one column per
  head): each pruned layer selects its own heads' rows of it;
- `gated_ffn`: true when the intermediate projection's rows are [input | gate], one row of
  each per neuron (ModernBERT's `Wi`, 2 x intermediate wide): both go with the neuron.

The config records what is kept, by original index: `headcount_kept_heads` and
`headcount_kept_neurons`, one list per distinct layer.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn

KEPT_HEADS_KEY = "headcount_kept_heads"
KEPT_NEURONS_KEY = "headcount_kept_neurons"
REQUIRED_PATHS = ("layers", "attention", "head_rows", "attention_output", "intermediate",
                  "ffn_output")
OPTIONAL_PATHS = ("fused_qkv", "interleaved_qkv", "head_vectors", "head_bias_argument",
                  "gated_ffn")
# On an attention module that selects its heads' rows of a shared bias: the original
# heads it has (by index), and (argument name, position) of the bias in its forward.
BIAS_HEADS = "headcount_bias_heads"
BIAS_ARGUMENT = "headcount_bias_argument"


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


def slice_vector(vector: nn.Parameter, index: torch.Tensor) -> nn.Parameter:
    """A new 1-D parameter keeping entries `index`."""
    kept = vector.detach().index_select(0, index).clone()
    return nn.Parameter(kept, requires_grad=vector.requires_grad)


class NoHeads(nn.Module):
    """Stands in for an attention module whose every head was removed.

    It keeps the (now empty) projections and per-head parameters, so that parameter names
    and the state dict stay as they were, and returns an empty context `[batch, seq, 0]`,
    passed through the output projection when this module owns it (DistilBERT, MPNet,
    ModernBERT): the result is the projection's bias.
    """

    def __init__(self, projections: dict[str, nn.Module | nn.Parameter], output: str | None):
        super().__init__()
        for name, value in projections.items():
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            else:
                self.add_module(name, value)
        self.output_name = output

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [batch, seq, 0]
        if self.output_name is not None:
            context = getattr(self, self.output_name)(context)
        return context, None


def layer_modules(base_model: nn.Module, paths: dict) -> list[nn.Module]:
    """The distinct layers of the encoder (one for ALBERT's shared layer)."""
    return list(module_at(base_model, paths["layers"]))


def unit_index(positions: list[int], width: int, count: int, parts: int = 1,
               device=None) -> torch.Tensor:
    """Indices of the rows (or columns) of the units at `positions`, `width` each, in a
    tensor holding `parts` consecutive blocks of `count` units (q | k | v: 3 parts)."""
    index = [part * count * width + p * width + i
             for part in range(parts) for p in positions for i in range(width)]
    return torch.tensor(index, dtype=torch.long, device=device)


def head_tensors(attention: nn.Module, paths: dict) -> list[tuple[str, int, int]]:
    """(name, parts, width in head sizes) of every per-head tensor `attention` has: a
    Linear (its output rows) or a 1-D parameter, holding `parts` consecutive blocks with
    `width * d_head` rows per head."""
    found = [(name, 1, 1) for name in paths["head_rows"]]
    if paths.get("fused_qkv"):
        found.append((paths["fused_qkv"], 3, 1))
    if paths.get("interleaved_qkv"):
        found.append((paths["interleaved_qkv"], 1, 3))
    found += [(name, 1, 1) for name in paths.get("head_vectors", ())]
    return [entry for entry in found
            if isinstance(getattr(attention, entry[0], None), (nn.Linear, nn.Parameter))]


def own_heads_of_bias(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: the shared bias argument restricted to this layer's heads."""
    name, position = getattr(module, BIAS_ARGUMENT)
    heads = getattr(module, BIAS_HEADS)

    def select(bias):
        if bias is None:
            return None
        return bias.index_select(1, torch.tensor(heads, dtype=torch.long, device=bias.device))

    if name in kwargs:
        kwargs = {**kwargs, name: select(kwargs[name])}
    elif len(args) > position:
        args = (*args[:position], select(args[position]), *args[position + 1:])
    return args, kwargs


def _select_bias_heads(attention: nn.Module, argument: str, positions: list[int],
                       count: int) -> None:
    previous = getattr(attention, BIAS_HEADS, None)
    if previous is None:  # first pruning of this layer: every original head is present
        previous = list(range(count))
        names = list(inspect.signature(attention.forward).parameters)
        setattr(attention, BIAS_ARGUMENT, (argument, names.index(argument)))
        attention.register_forward_pre_hook(own_heads_of_bias, with_kwargs=True)
    setattr(attention, BIAS_HEADS, [previous[p] for p in positions])


def shrink_heads(layer: nn.Module, paths: dict, positions: list[int], head_dim: int) -> None:
    """Keep only the heads at `positions` (of those the layer has now) in `layer`."""
    attention = module_at(layer, paths["attention"])
    output_path = paths["attention_output"]
    output = module_at(layer, output_path)
    count = output.in_features // head_dim
    device = output.weight.device
    tensors = head_tensors(attention, paths)
    for name, parts, width in tensors:
        index = unit_index(positions, width * head_dim, count, parts, device)
        current = getattr(attention, name)
        setattr(attention, name, slice_linear(current, index, 0)
                if isinstance(current, nn.Linear) else slice_vector(current, index))
    set_module(layer, output_path,
               slice_linear(output, unit_index(positions, head_dim, count, 1, device), 1))
    # Keep the modules' own head counts truthful (forward reshapes with -1 and head size).
    for attribute in ("num_attention_heads", "n_heads"):
        if hasattr(attention, attribute):
            setattr(attention, attribute, len(positions))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(positions) * head_dim
    if paths.get("head_bias_argument") and positions:
        _select_bias_heads(attention, paths["head_bias_argument"], positions, count)
    if not positions:
        owned = output_path.startswith(paths["attention"] + ".")
        output_name = output_path[len(paths["attention"]) + 1:] if owned else None
        projections = {name: getattr(attention, name) for name, _, _ in tensors}
        if owned:
            projections[output_name] = module_at(layer, output_path)
        set_module(layer, paths["attention"], NoHeads(projections, output_name))


def shrink_neurons(layer: nn.Module, paths: dict, positions: list[int]) -> None:
    """Keep only the feed-forward neurons at `positions` (of those the layer has now)."""
    intermediate = module_at(layer, paths["intermediate"])
    output = module_at(layer, paths["ffn_output"])
    count, device = output.in_features, output.weight.device
    parts = 2 if paths.get("gated_ffn") else 1
    set_module(layer, paths["intermediate"],
               slice_linear(intermediate, unit_index(positions, 1, count, parts, device), 0))
    set_module(layer, paths["ffn_output"],
               slice_linear(output, unit_index(positions, 1, count, 1, device), 1))


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
            size = module_at(layer, paths["ffn_output"]).in_features
            if len(kept_neurons[index]) < size:
                shrink_neurons(layer, paths, list(kept_neurons[index]))
    return model
