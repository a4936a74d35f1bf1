"""Gate every attention head, and every feed-forward neuron, with a forward pre-hook.

The output projection's input is the concatenated context of all heads,
`[batch, seq, heads * d_head]`. Scaling head h's slice by ξ_h is exactly Michel et al.'s
gate (softmax(QKᵀ)·ξ_h·V = ξ_h·softmax(QKᵀ)·V), it works with every attention
implementation (SDPA, eager, flash), and it does not depend on `head_mask`, which
transformers 5 silently ignores.

Gate shapes (L = layer applications, H = heads per layer, B = batch). Heads are indexed by
their original position, also in a physically pruned model (whose removed heads' gates are
simply unused):

- `[L, H]`     one gate per head: a 0/1 mask or a differentiable tensor;
- `[B, L, H]`  one gate per example and head (exact per-example gradients in one pass);
- with `shared=True` (ALBERT only, whose one layer runs L times): `[H]` or `[B, H]`, one
  gate per head used by every application, so autograd sums ∂L/∂ξ_h^(l) over l.

A feed-forward neuron is gated the same way: the hook sits on the feed-forward output
projection, whose input is the intermediate activation `[batch, seq, neurons]`, and scales
neuron j's feature; the shapes are the same with neurons (the original intermediate size)
for heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from headcount.arch import attention_blocks, encoder_of, feed_forwards
from headcount.layouts import head_layout, neuron_layout


@dataclass(frozen=True)
class GatedUnits:
    """Units gated on the input of one projection per distinct layer: heads (the context
    slices `width` = d_head wide before the attention output projection) or, the same way,
    any other unit whose contribution is a slice of a projection's input. Units are indexed
    by their original position; `kept` lists, per distinct layer, those still present."""

    projections: tuple[nn.Module, ...]  # per distinct layer: the module whose input is scaled
    kept: tuple[tuple[int, ...], ...]
    num_units: int  # per layer, in the original model
    width: int  # input features per unit
    num_layers: int  # layer applications (ALBERT: its one layer runs num_layers times)
    shared_layers: bool
    encoder: nn.Module  # its forward starts a pass (resets ALBERT's application count)
    what: str = "heads"

    def kept_in_application(self, application: int) -> tuple[int, ...]:
        return self.kept[0 if self.shared_layers else application]

    def check(self, gate: torch.Tensor, shared: bool) -> bool:
        """Validate the gate's shape; return whether it has a leading batch dimension."""
        if shared and not self.shared_layers:
            raise ValueError(
                f"shared=True needs a model whose layers share weights (ALBERT); this one has "
                f"{self.num_layers} distinct layers"
            )
        trailing = (self.num_units,) if shared else (self.num_layers, self.num_units)
        described = (f"[{self.what}] or [batch, {self.what}]" if shared
                     else f"[layers, {self.what}] or [batch, layers, {self.what}]")
        shape = tuple(gate.shape)
        if shape[-len(trailing):] != trailing or len(shape) not in (len(trailing),
                                                                     len(trailing) + 1):
            raise ValueError(
                f"gate has shape {list(shape)}; expected {described} = {list(trailing)}")
        return len(shape) == len(trailing) + 1


class _Scaler:
    """The forward pre-hook of one layer application: scales each present unit's slice of
    the projection's input by its gate."""

    def __init__(self, units: GatedUnits, gate: torch.Tensor, shared: bool, per_example: bool):
        self.units, self.gate, self.shared, self.per_example = units, gate, shared, per_example

    def scale(self, application: int, args: tuple) -> tuple | None:
        inputs = args[0]  # [batch, seq, kept units * width]
        kept = self.units.kept_in_application(application)
        if not kept:  # every unit of this layer was removed: nothing to gate
            return None
        g = self.gate  # -> [units] or [batch, units]
        if not self.shared:
            g = g[:, application] if self.per_example else g[application]
        if len(kept) < self.units.num_units:  # physically pruned: gates of the kept units
            g = g[..., list(kept)]
        g = g.to(device=inputs.device, dtype=inputs.dtype)
        if self.per_example:
            if g.shape[0] != inputs.shape[0]:
                raise ValueError(f"per-example gate has batch size {g.shape[0]}, "
                                 f"the input has {inputs.shape[0]}")
            g = g[:, None, :, None]  # [batch, 1, units, 1]
        else:
            g = g[None, None, :, None]  # [1, 1, units, 1]
        sliced = inputs.view(*inputs.shape[:-1], len(kept), self.units.width)
        return (sliced.mul(g).view(inputs.shape), *args[1:])


def _hooks(units: GatedUnits, scaler: _Scaler) -> list[torch.utils.hooks.RemovableHandle]:
    """Install the pre-hooks; with shared layers, one module runs num_layers times per
    forward: its calls are counted (reset at each forward of the encoder) to know which
    layer application is running."""
    if not units.shared_layers:
        return [projection.register_forward_pre_hook(
                    lambda module, args, i=index: scaler.scale(i, args))
                for index, projection in enumerate(units.projections)]
    calls = [0]

    def reset(module, args):
        calls[0] = 0

    def hook(module, args):
        application = calls[0]
        calls[0] += 1
        if application >= units.num_layers:
            raise RuntimeError(f"the layer ran {application + 1} times in one forward; "
                               f"expected {units.num_layers}")
        return scaler.scale(application, args)

    return [units.encoder.register_forward_pre_hook(reset),
            units.projections[0].register_forward_pre_hook(hook)]


@contextmanager
def gate_units(units: GatedUnits, gate: torch.Tensor, *, shared: bool = False) -> Iterator[None]:
    """Scale each unit's input slice by `gate` inside the block; the hooks go on exit or
    error (gate shapes: the module docstring, with heads read as units)."""
    per_example = units.check(gate, shared)
    if gate.dtype == torch.bool:
        gate = gate.float()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        handles = _hooks(units, _Scaler(units, gate, shared, per_example))
        yield
    finally:
        for handle in handles:
            handle.remove()


def gated_heads(model: nn.Module) -> GatedUnits:
    """The model's attention heads as gated units (on each attention output projection)."""
    layout = head_layout(model)
    return GatedUnits(
        projections=tuple(block.output for block in attention_blocks(model)),
        kept=layout.kept, num_units=layout.num_heads, width=layout.head_dim,
        num_layers=layout.num_layers, shared_layers=layout.shared_layers,
        encoder=encoder_of(model), what="heads",
    )


@contextmanager
def gate_heads(model: nn.Module, gate: torch.Tensor, *, shared: bool = False) -> Iterator[None]:
    """Scale each head's context by `gate` inside the block; the hooks go on exit or error.

    Example:
        >>> mask = torch.ones(layout.num_layers, layout.num_heads); mask[0, 3] = 0
        >>> with gate_heads(model, mask):
        ...     logits = model(**batch).logits   # head 3 of layer 0 switched off
    """
    with gate_units(gated_heads(model), gate, shared=shared):
        yield


def gated_neurons(model: nn.Module) -> GatedUnits:
    """The model's feed-forward neurons as gated units (on each feed-forward output
    projection, whose input is the intermediate activation, one feature per neuron)."""
    layout = neuron_layout(model)
    return GatedUnits(
        projections=tuple(block.output for block in feed_forwards(model)),
        kept=layout.kept, num_units=layout.num_neurons, width=1,
        num_layers=layout.num_layers, shared_layers=layout.shared_layers,
        encoder=encoder_of(model), what="neurons",
    )


@contextmanager
def gate_neurons(model: nn.Module, gate: torch.Tensor, *,
                 shared: bool = False) -> Iterator[None]:
    """Scale each feed-forward neuron's activation by `gate` inside the block (shapes as for
    heads, with neurons for heads: `[layers, neurons]`, `[batch, layers, neurons]`, and for
    ALBERT with `shared=True` `[neurons]` or `[batch, neurons]`); the hooks go on exit or
    error.

    Example:
        >>> mask = torch.ones(6, 1536); mask[2, :768] = 0
        >>> with gate_neurons(model, mask):
        ...     logits = model(**batch).logits   # half of layer 2's neurons switched off
    """
    with gate_units(gated_neurons(model), gate, shared=shared):
        yield


def gated(model: nn.Module, units: str) -> GatedUnits:
    """`gated_heads` or `gated_neurons`, by unit kind ("heads" or "neurons")."""
    return gated_heads(model) if units == "heads" else gated_neurons(model)
