"""Gate every attention head with a forward pre-hook on the attention output projection.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from headcount.arch import attention_blocks, encoder_of, head_layout


def _expected_shapes(layout, shared: bool) -> tuple[tuple[int, ...], str]:
    if shared:
        return (layout.num_heads,), "[heads] or [batch, heads]"
    return (layout.num_layers, layout.num_heads), "[layers, heads] or [batch, layers, heads]"


def _check_gate(gate: torch.Tensor, layout, shared: bool) -> bool:
    """Validate the gate's shape; return whether it has a leading batch dimension."""
    if shared and not layout.shared_layers:
        raise ValueError(
            f"shared=True needs a model whose layers share weights (ALBERT); "
            f"'{layout.family}' has {layout.num_layers} distinct layers"
        )
    trailing, described = _expected_shapes(layout, shared)
    shape = tuple(gate.shape)
    if shape[-len(trailing):] != trailing or len(shape) not in (len(trailing), len(trailing) + 1):
        raise ValueError(f"gate has shape {list(shape)}; expected {described} = {list(trailing)}")
    return len(shape) == len(trailing) + 1


@contextmanager
def gate_heads(model: nn.Module, gate: torch.Tensor, *, shared: bool = False) -> Iterator[None]:
    """Scale each head's context by `gate` inside the block; the hooks go on exit or error.

    Example:
        >>> mask = torch.ones(layout.num_layers, layout.num_heads); mask[0, 3] = 0
        >>> with gate_heads(model, mask):
        ...     logits = model(**batch).logits   # head 3 of layer 0 switched off
    """
    layout = head_layout(model)
    per_example = _check_gate(gate, layout, shared)
    if gate.dtype == torch.bool:
        gate = gate.float()
    blocks = attention_blocks(model)
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def gate_for(application: int) -> torch.Tensor:
        # -> [heads] or [batch, heads]
        if shared:
            return gate
        return gate[:, application] if per_example else gate[application]

    def make_hook(layer_of_call):
        def hook(module: nn.Module, args: tuple) -> tuple:
            context = args[0]  # [batch, seq, kept heads * d_head]
            application = layer_of_call()
            kept = layout.kept_in_application(application)
            if not kept:  # every head of this layer was removed: nothing to gate
                return None
            g = gate_for(application)
            if len(kept) < layout.num_heads:  # physically pruned: gates of the kept heads
                g = g[..., list(kept)]
            g = g.to(device=context.device, dtype=context.dtype)
            if per_example:
                if g.shape[0] != context.shape[0]:
                    raise ValueError(
                        f"per-example gate has batch size {g.shape[0]}, "
                        f"the input has {context.shape[0]}"
                    )
                g = g[:, None, :, None]  # [batch, 1, heads, 1]
            else:
                g = g[None, None, :, None]  # [1, 1, heads, 1]
            heads = context.view(*context.shape[:-1], len(kept), layout.head_dim)
            return (heads.mul(g).view(context.shape), *args[1:])

        return hook

    try:
        if layout.shared_layers:
            # One module runs L times per forward: count its calls, reset at each forward
            # of the encoder, to know which layer application is running.
            calls = [0]

            def reset(module, args, kwargs=None):
                calls[0] = 0

            def next_layer() -> int:
                application = calls[0]
                calls[0] += 1
                if application >= layout.num_layers:
                    raise RuntimeError(
                        f"attention ran {application + 1} times in one forward; "
                        f"expected {layout.num_layers}"
                    )
                return application

            handles.append(encoder_of(model).register_forward_pre_hook(reset))
            handles.append(blocks[0].output.register_forward_pre_hook(make_hook(next_layer)))
        else:
            for index, block in enumerate(blocks):
                handles.append(
                    block.output.register_forward_pre_hook(make_hook(lambda i=index: i))
                )
        yield
    finally:
        for handle in handles:
            handle.remove()
