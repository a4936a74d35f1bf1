"""Michel et al.'s head importance, exact per example, at batch speed; and its normalisation.

    I[l, h] = mean over examples x of |∂L(x)/∂ξ[l, h]|   at ξ ≡ 1

The absolute value is taken per example. A gate of shape [batch, layers, heads] gives each
example its own ξ, so one backward pass of the summed per-example losses yields every
example's own gradient. (A single gate shared by the batch would give |Σ_x ∂L/∂ξ|, a
different and biased quantity.) Parameters are frozen during the pass: no weight gradients
are computed or stored, which makes the pass cheaper than a plain training step.

For ALBERT, whose one layer runs L times, a head's gate is shared by all applications, so
the gradient is Σ_l ∂L/∂ξ_h^(l) before the absolute value: I_h = mean |Σ_l ∂L(x)/∂ξ_h^(l)|.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from headcount.choices import NORMALIZATIONS, check_choice
from headcount.distributed import sum_across_processes
from headcount.errors import ConfigError
from headcount.forward import batches_on_device, eval_mode, task_outputs
from headcount.gates import gate_heads
from headcount.layouts import head_layout


@dataclass(frozen=True)
class Importance:
    """Raw importance (the per-example mean of |∂L/∂ξ|), `[layers, heads]`; one row for
    ALBERT's shared heads. `mean_loss` is the task loss of the ungated model."""

    raw: torch.Tensor
    num_examples: int
    mean_loss: float
    shared: bool

    def normalized(self, method: str) -> torch.Tensor:
        return normalize(self.raw, method)


def check_normalization(method: str) -> None:
    check_choice("normalisation", method, NORMALIZATIONS)


def normalize(scores: torch.Tensor, method: str) -> torch.Tensor:
    """Per-layer normalisation Ī[l,h] = I[l,h] / Norm(I[l,1..H]), Norm ∈ {l1, l2, none}.

    A layer whose scores are all zero stays zero (rather than 0/0).

    Example:
        >>> normalize(torch.tensor([[1.0, 3.0]]), "l1")
        tensor([[0.2500, 0.7500]])
    """
    check_normalization(method)
    if method == "none":
        return scores.clone()
    order = 1 if method == "l1" else 2
    norms = torch.linalg.vector_norm(scores, ord=order, dim=-1, keepdim=True)
    return torch.where(norms > 0, scores / torch.where(norms > 0, norms, 1), 0)


@contextmanager
def frozen_parameters(model: nn.Module):
    """Turn off parameter gradients for the block (restoring each flag afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def head_importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
    *,
    shared: bool | None = None,
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """Exact per-example head importance of `model` on `batches` of a task of `kind`.

    `shared` (default: True for ALBERT) gives one score per head shared by all layer
    applications; `shared=False` on ALBERT scores each application separately. Under
    torch.distributed, each process passes its own share of the examples (see
    `distributed.shard`) and the result covers all of them.

    Example:
        >>> data = prepare_data(task, tokenizer, model.config, split="train", fraction=0.2)
        >>> imp = head_importance(model, data.batches(32), data.kind)
        >>> imp.normalized("l1").shape
        torch.Size([12, 12])
    """
    layout = head_layout(model)
    shared = layout.shared_layers if shared is None else shared
    device = next(model.parameters()).device
    gate_shape = (layout.num_heads,) if shared else (layout.num_layers, layout.num_heads)
    total_abs = torch.zeros(gate_shape, dtype=torch.float64, device=device)
    # Sums stay on the device: no host synchronisation per batch.
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with eval_mode(model), frozen_parameters(model):
        for batch in batches_on_device(batches, device, desc="importance", progress=progress,
                                       total=total):
            size = batch["input_ids"].shape[0]
            gate = torch.ones((size, *gate_shape), device=device, requires_grad=True)
            with gate_heads(model, gate, shared=shared):
                losses = task_outputs(model, batch, kind).losses  # [batch]
            (gradient,) = torch.autograd.grad(losses.sum(), gate)
            total_abs += gradient.abs().sum(dim=0, dtype=torch.float64)
            total_loss += losses.detach().sum(dtype=torch.float64)
            count += size
    # Under torch.distributed each process saw its own share of the examples: add them up.
    sum_across_processes(total_abs)
    sum_across_processes(total_loss)
    count = int(sum_across_processes(torch.tensor([count], device=device)).item())
    if count == 0:
        raise ConfigError("no batches to estimate importance on")
    raw = (total_abs / count).float().cpu()
    mean_loss = float(total_loss) / count
    return Importance(raw.reshape(1, -1) if shared else raw, count, mean_loss, shared)
